"""`lmkit mix`: interpolate comparable runs of any families into a new run folder.

The components must have been measured the same way (protocol hash, vocabulary id, valid and test
files), because the mixture is fitted on their valid log-probabilities and scored on their test file.
Their per-token valid log-probabilities come from the one scoring path (score_encoded); EM fits the
weights (models.mix.fit_weights); the mixture is then scored on valid/test exactly like a trained run."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .compare import ASPECTS, read_runs
from .data.corpus import ParallelText, Text, read_recorded
from .errors import DataError, IncomparableError, ModelError, UsageError
from .evaluate.perplexity import score_encoded
from .models.mix import MixConfig, MixtureModel, fit_weights
from .protocol import Protocol
from .outputs import check_output_dir
from .runs import RunRecord, load_run, versions
from .runwriter import RunWriter
from .logs import Log

MIX_ASPECTS = ("protocol", "vocabulary", "valid", "test")


def _check_mixable(runs: list[tuple[str, RunRecord]]) -> None:
    """One IncomparableError naming what differs between the first run and the first one unlike it."""
    first_path, first = runs[0]
    for path, record in runs[1:]:
        diffs = [ASPECTS[a][1](first, record) for a in MIX_ASPECTS if ASPECTS[a][0](first) != ASPECTS[a][0](record)]
        if diffs:
            raise IncomparableError(f"cannot mix {first_path} and {path}: {'; '.join(diffs)}; the runs of a mixture "
                                    "must share protocol, vocabulary and valid/test files")
    if not isinstance(first.data.get("valid"), dict):
        raise ModelError(f"{first_path}: run.json records no valid file; the mixture weights are fitted on it")


def _recorded_text(runs: list[tuple[str, RunRecord]], split: str) -> Text | ParallelText:
    """The split's file as the runs recorded it, from the first recorded path that still holds it unchanged:
    a mixture fitted or scored on other bytes would carry the components' hashes for data it never saw."""
    problems = []
    for path, record in runs:
        try:
            return read_recorded(record.data[split], path, split)
        except DataError as exc:
            problems.append(exc.message)
    raise DataError(f"cannot mix: {problems[0]}")


def _component_entry(path: str, record: RunRecord, out: Path) -> dict:
    absolute = Path(path).resolve()
    return {"path": str(absolute), "relative": os.path.relpath(absolute, out.resolve()), "given": str(path),
            "kind": record.kind, "label": record.label, "vocab_id": record.vocab_id,
            "protocol_hash": Protocol.from_dict(record.protocol).hash, "created": record.created}


def build_mixture(runs: Sequence[str | Path], output: str | Path, *, device: str = "cpu", force: bool = False,
                  log: Log = lambda _: None) -> Path:
    """Fit interpolation weights for `runs` on their valid file by EM, score valid/test, write a run folder."""
    from .pipeline.measure import final_metrics
    from .pipeline.prepare import encode_splits

    if len(runs) < 2:
        raise UsageError("give at least two run folders to mix")
    out = Path(output)
    for p in runs:
        if Path(p).is_file():
            raise UsageError(f"{p}: lmkit mix needs run folders (their run.json records protocol and data files)")
        if Path(p).resolve() == out.resolve():
            raise UsageError(f"{p}: the output folder cannot be one of the mixed runs")
    out = check_output_dir(out, force, run_folders=runs)
    records = read_runs([str(p) for p in runs])
    _check_mixable(records)
    models = []
    for path, _ in records:
        model, _ = load_run(path, device=device)
        if not model.normalised:
            raise UsageError(f"{path}: {model.label} is not normalised (its scores are not probabilities), "
                             "so it cannot be mixed")
        models.append(model)
    vocab, protocol = models[0].vocab, models[0].protocol
    texts = {s: _recorded_text(records, s) for s in ("valid", "test") if isinstance(records[0][1].data.get(s), dict)}
    encoded = encode_splits(texts, vocab, protocol, log)

    start = time.perf_counter()
    valid = []
    for model in models:
        log(f"scoring valid with {model.label}")
        valid.append(-score_encoded(model, encoded["valid"], keep=False).token_nll)
    em = fit_weights(np.stack(valid))
    seconds = time.perf_counter() - start
    if em.excluded:
        log(f"warning: {em.excluded} valid tokens have probability 0 under every component; EM ignores them")
    log(f"EM: {em.iterations} iteration{'' if em.iterations == 1 else 's'}, "
        f"valid NLL {em.nll[0]:.6f} -> {em.nll[-1]:.6f} nats/token")

    config = MixConfig([_component_entry(p, r, out) for p, r in records], [float(w) for w in em.weights])
    mixture = MixtureModel(config, vocab, protocol, models)
    mixture.info = {"weights": config.weights, "em_iterations": em.iterations,
                    "valid_nll_per_iteration": em.nll, "em_seconds": seconds}
    data = {s: records[0][1].data[s] for s in texts}
    trains = [r.data.get("train") or {} for _, r in records]
    if trains[0].get("sha256") and all(t.get("sha256") == trains[0]["sha256"] for t in trains):
        data["train"] = trains[0]  # components trained on different texts: none of them is the mixture's
    scores: dict = {}
    metrics = final_metrics(mixture, encoded, log, data, scores)
    record = RunRecord(
        kind=MixtureModel.kind, label=mixture.label, config=asdict(config), protocol=protocol.to_dict(),
        vocab_id=vocab.vocab_id, data=data, metrics=metrics, parameters=mixture.num_parameters(),
        train_seconds=sum(r.train_seconds or 0.0 for _, r in records) + seconds,
        tokens_seen=sum(r.tokens_seen or 0 for _, r in records), seed=None, device=device,
        fit_info=mixture.fit_info(), versions=versions())
    row = {"step": 0, "tokens_seen": record.tokens_seen, "seconds": record.train_seconds,
           "valid_ppl": metrics.get("valid", {}).get("perplexity")}
    return RunWriter(out, replace=force, log=log).publish(vocab, mixture, record, scores, row)
