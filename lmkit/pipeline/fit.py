"""Train and resume: a request resolved into data and a model, fitted, measured, and written as a run
folder (n-gram in one atomic step; neural as it trains, a --force replacement swapped in when complete)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ..atomic import atomic_dir
from ..data.corpus import (Encoded, check_recorded, count_tokens, read_recorded)
from ..data.vocab import Vocab
from ..datasets.store import resolve_corpus
from ..errors import ModelError, UsageError
from ..evaluate.perplexity import Score
from ..models import family
from ..outputs import check_output_dir
from ..protocol import Protocol
from ..runs import RunRecord, append_metrics, read_record, versions, write_record
from ..validate import (check_train_config)
from ..logs import Log, quiet
from .measure import final_metrics, quick_checks, record_test_scores
from .prepare import cached_split, default_run_dir, encode_splits, input_paths, locate_splits, read_split, split_info
from .request import TrainRequest, check_request, counting_plan, is_torch_family, protocol_for, task_for


def train(req: TrainRequest, log: Log = quiet) -> Path:
    """Fit a model on a corpus, score valid/test under the one scoring path, write a run folder.

    The run folder is locked while it is written (lmkit.runlock): a second writer is refused, not mixed in."""
    from contextlib import ExitStack

    with ExitStack() as locks:
        return _train(req, log, locks)


def _train(req: TrainRequest, log: Log, locks) -> Path:
    from ..runlock import run_lock

    cls, config, tcfg = check_request(req)
    req = dataclasses.replace(req, corpus=resolve_corpus(req.corpus))  # a downloaded corpus given by name
    counting = counting_plan(req, cls)
    if tcfg is not None and tcfg.seq_len is not None and req.context != "stream":
        raise UsageError("--seq-len sets the window of --context stream; sentence context trains on whole lines "
                         "(add --context stream, or drop --seq-len)")
    launch = _check_launch(cls, tcfg, req.model)
    if not launch.is_main:
        log = quiet  # under torchrun rank 0 speaks (and writes) for the run
    task = task_for(req)
    files = locate_splits(req, task)
    out = Path(req.output) if req.output else None
    if out is not None and launch.is_main:
        out = check_output_dir(out, req.force, inputs=input_paths(req, files))
        locks.enter_context(run_lock(out))
        check_output_dir(out, req.force, inputs=input_paths(req, files))  # again under the lock

    vocab = Vocab.load(req.vocab) if req.vocab else None
    protocol = protocol_for(req, vocab, task)
    paths = {s: files.get(s) for s in ("train", "valid", "test") if files.get(s) is not None}
    cached = {s: enc for s, p in paths.items() if (enc := cached_split(p, vocab, protocol, log)) is not None}
    texts = {s: read_split(p) for s, p in paths.items() if s not in cached}
    if vocab is None:
        vocab = Vocab.build(count_tokens(texts["train"], protocol), level=protocol.level,
                            lowercase=protocol.lowercase, normalize=protocol.normalize,
                            min_count=req.min_count, max_size=req.max_size, with_sep=task == "translate")
        log(f"vocabulary: {len(vocab):,} ids from {texts['train'].name}")
    encoded = encode_splits(texts, vocab, protocol, log, cached)
    data = {s: split_info(texts.get(s), encoded[s]) for s in paths}

    if tcfg is not None:
        _check_stream_fits(cls, tcfg, protocol, encoded["train"])
        if out is None:
            out = default_run_dir(req.runs_dir, cls.kind)
            if launch.is_main:
                locks.enter_context(run_lock(out))
        return _train_torch(cls, config, tcfg, vocab, protocol, encoded, data, out, log, progress=req.progress)

    model = cls(config, vocab, protocol)
    if counting is not None:
        model.counting = counting
    log(f"training {model.label} on {encoded['train'].num_tokens:,} tokens ({protocol.context} context)")
    start = time.perf_counter()
    info = model.fit(encoded["train"], encoded["valid"], log) or {}
    seconds = time.perf_counter() - start
    scores: dict[str, Score] = {}
    metrics = final_metrics(model, encoded, log, data, scores)
    record = RunRecord(
        kind=cls.kind, label=model.label, config=asdict(config), protocol=protocol.to_dict(),
        vocab_id=vocab.vocab_id, data=data, metrics=metrics, parameters=int(model.num_parameters()),
        train_seconds=seconds, tokens_seen=encoded["train"].num_tokens, seed=req.seed, device="cpu",
        fit_info=info, versions=versions(), checks=quick_checks(model, encoded, log),
    )
    if out is None:
        out = default_run_dir(req.runs_dir, model.label)
        locks.enter_context(run_lock(out))
    with atomic_dir(out, replace=req.force, log=log) as tmp:
        vocab.save(tmp / "vocab.json")
        model.save(tmp)
        append_metrics(tmp, [{"step": 0, "tokens_seen": record.tokens_seen, "seconds": seconds,
                              "valid_ppl": metrics.get("valid", {}).get("perplexity")}])
        record_test_scores(tmp, scores, data)
        write_record(tmp, record)
    return out


def _check_launch(cls, tcfg, spec: str):
    """The torchrun launch (lmkit.distributed.Launch); with WORLD_SIZE > 1, what cannot train data-parallel
    (n-gram counting, a global batch that does not split evenly) is refused before any file is touched."""
    from ..distributed import check_family, check_global_batch, launch_from_env

    launch = launch_from_env()
    check_family(tcfg is not None, spec, launch.world_size)
    if tcfg is not None and launch.world_size > 1:
        from ..train import _resolved

        batch = _resolved(tcfg, getattr(cls.module, "train_defaults", {})).batch_size
        check_global_batch(batch, launch.world_size)
    return launch


def _check_stream_fits(cls, tcfg, protocol: Protocol, train: Encoded) -> None:
    """Stream context cuts the training stream into --batch-size parallel rows: a batch wider than the
    stream has no row to train on. Refused here, before a run folder exists, not at the first step."""
    if protocol.context != "stream":
        return
    from ..train import _resolved

    batch = _resolved(tcfg, getattr(cls.module, "train_defaults", {})).batch_size
    targets = train.num_tokens  # every token and each line's </s> (batching.stream_ids)
    if targets < batch:
        raise UsageError(f"--batch-size {batch} is more rows than the training stream has tokens ({targets}): "
                         f"stream context needs at most {targets} (or use --context sentence)")


def _build_torch_model(cls, config, tcfg, vocab: Vocab, protocol: Protocol, device: str | None = None):
    """Seeded construction on the chosen device (weights identical for the same seed); `device` overrides
    tcfg.device (a torchrun rank's cuda:LOCAL_RANK) without changing what run.json records."""
    import torch

    from ..device import place

    placement = place(device or tcfg.device, tcfg.precision, tcfg.threads)
    torch.manual_seed(tcfg.seed)
    try:
        model = cls(config, vocab, protocol, device=placement.device)
    except (RuntimeError, MemoryError) as exc:  # sizes within the limits can still exceed this machine
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError) or "allocate" in text or "out of memory" in text.lower():
            raise UsageError(f"{cls.kind}: the model does not fit in memory on {placement.name}; choose smaller "
                             f"sizes ({text})") from None
        raise
    model.placement = placement
    model.train_config = tcfg
    if tcfg.compile:
        model.net = torch.compile(model.net)
    return model


def _train_torch(cls, config, tcfg, vocab, protocol, encoded, data, out: Path, log: Log,
                 *, progress: bool, resume_record: RunRecord | None = None) -> Path:
    """Neural runs write their folder as they go (checkpoints), each file atomically.

    Replacing an existing run (--force, already checked by check_output_dir) trains in a hidden sibling
    folder that is swapped in only when the new run is complete: until then the previous run is untouched.
    Interrupted (Ctrl-C, SIGTERM), the new run is kept beside it as OUT.new, resumable; killed, its temp
    folder is removed by the next command that writes OUT."""
    from ..atomic import publish_dir, staging_dir
    from ..distributed import is_main_process
    from ..train import Interrupted

    replacing = resume_record is None and is_main_process() and out.exists() and any(out.iterdir())
    work = staging_dir(out, log) if replacing else out
    try:
        _train_torch_into(cls, config, tcfg, vocab, protocol, encoded, data, work, log, progress=progress,
                          resume_record=resume_record, replacing=out if replacing else None)
    except Interrupted as exc:
        if not replacing:
            raise
        kept = _keep_beside(work, out)
        raise Interrupted(exc.message.replace(str(work), str(kept)) + f"; {out} still holds the previous run, "
                          "untouched", exit_code=exc.exit_code) from None
    except BaseException:
        if replacing:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if replacing:
        publish_dir(work, out, replace=True)
    return out


def _keep_beside(work: Path, out: Path) -> Path:
    """Move an interrupted replacement run from its temp folder to a visible sibling OUT.new (OUT.new-2,
    ... when taken), so that it can be resumed; the run it was to replace stays where it is."""
    for n in range(1, 1000):
        kept = out.with_name(f"{out.name}.new" + (f"-{n}" if n > 1 else ""))
        if not kept.exists() and not kept.is_symlink():
            work.replace(kept)
            return kept
    return work


def _train_torch_into(cls, config, tcfg, vocab, protocol, encoded, data, out: Path, log: Log,
                      *, progress: bool, resume_record: RunRecord | None = None, replacing: Path | None = None
                      ) -> Path:
    """Train into `out` (the run folder, or the temp folder of a replacement) and write its final record.

    Under torchrun every process trains inside one process group (lmkit.distributed.session: up for the
    fit, torn down after it and on error); rank 0 alone writes the folder and scores the final numbers."""
    from ..distributed import session

    with session(tcfg.device) as ranks:
        if not ranks.is_main:
            log, progress = quiet, False
        model, record, info = _fit_torch(cls, config, tcfg, vocab, protocol, encoded, data, out, log, ranks,
                                         progress=progress, resume_record=resume_record, replacing=replacing)
    if not ranks.is_main:
        return out
    record.status = "complete"
    record.fit_info = info
    record.train_seconds = info.get("train_seconds", 0.0)
    record.tokens_seen = info.get("tokens_seen", 0)
    record.train_config = info.get("train_config", asdict(tcfg))
    scores: dict[str, Score] = {}
    record.metrics = final_metrics(model, encoded, log, record.data, scores)
    record_test_scores(out, scores, record.data)
    record.checks = quick_checks(model, encoded, log)
    record.versions = versions()
    write_record(out, record)
    return out


def _fit_torch(cls, config, tcfg, vocab, protocol, encoded, data, out: Path, log: Log, ranks, *,
               progress: bool, resume_record: RunRecord | None, replacing: Path | None = None):
    """(model, record, fit info): the model built on this rank's device and trained; rank 0 writes."""
    from ..train import Interrupted, fit

    model = _build_torch_model(cls, config, tcfg, vocab, protocol, device=ranks.device)
    writer = ranks.is_main
    device_name = model.placement.name + (f" x {ranks.world_size} processes" if ranks.distributed else "")
    if resume_record is None:
        record = RunRecord(kind=cls.kind, label=model.label, config=asdict(config),
                           protocol=protocol.to_dict(), vocab_id=vocab.vocab_id, data=data,
                           parameters=model.num_parameters(), seed=tcfg.seed,
                           device=device_name, train_config=asdict(tcfg), versions=versions())
    else:
        record = resume_record
        record.train_config = asdict(tcfg)
        record.device = device_name
    previous = record.status
    record.status = "training"
    if writer and resume_record is None:
        with atomic_dir(out, log=log) as tmp:  # vocab.json and run.json (status 'training') appear together
            vocab.save(tmp / "vocab.json")
            write_record(tmp, record)
    elif writer:
        write_record(out, record)
    model.run_dir = out
    where = (f"into {out} (after a crash: lmkit train --resume {out})" if replacing is None else
             f"into a temporary folder that replaces {replacing} once complete (until then {replacing} is untouched)")
    log(f"training {model.label} ({model.num_parameters():,} parameters) on {device_name}, "
        f"{model.placement.precision}, {protocol.context} context, {where}")
    try:
        info = fit(model, encoded["train"], encoded.get("valid"), tcfg, log=log, run_dir=out,
                   progress=progress, resume=resume_record is not None, ranks=ranks)
    except (Interrupted, KeyboardInterrupt):
        record.status = "interrupted"
        if model.train_state:
            record.fit_info = dict(model.train_state)
        if writer:
            write_record(out, record)
        raise
    except ModelError:  # a checkpoint that does not fit the model: refused before any step, record as it was
        if resume_record is not None and not model.train_state and writer:
            record.status = previous
            write_record(out, record)
        raise
    return model, record, info


def resume(run_dir: str | Path, train_options: dict | None = None, log: Log = quiet,
           progress: bool = True) -> Path:
    """Continue an interrupted, killed (status 'training') or finished neural run from its last checkpoint.

    Budgets given again replace the stored ones (e.g. more epochs); everything else is as stored.
    The folder is locked like `train`'s, so a resume never runs beside the training it continues."""
    from ..distributed import is_main_process
    from ..runlock import run_lock

    run_dir = Path(run_dir)
    read_record(run_dir)  # a missing or foreign folder is refused before a lock file appears beside it
    if not is_main_process():  # under torchrun rank 0 holds the lock and speaks for the run
        return _resume(run_dir, train_options, quiet, False)
    with run_lock(run_dir):
        return _resume(run_dir, train_options, log, progress)


def _resume(run_dir: Path, train_options: dict | None, log: Log, progress: bool) -> Path:
    import dataclasses

    from ..config import config_from_dict
    from ..distributed import is_main_process
    from ..runs import check_vocab_matches
    from ..train import TrainConfig, check_checkpoint, has_checkpoint, parse_duration

    record = read_record(run_dir)
    try:
        cls = family(record.kind)
    except UsageError:
        raise ModelError(f"{run_dir}: unknown model kind {record.kind!r} in run.json") from None
    if not is_torch_family(cls):
        raise UsageError(f"{run_dir}: only neural runs can be resumed (this is a {record.kind} run)")
    vocab = Vocab.load(run_dir / "vocab.json")
    if vocab.vocab_id != record.vocab_id:
        raise ModelError(f"{run_dir}: vocab.json does not match run.json")
    try:
        config = config_from_dict(cls.Config, record.config)
        protocol = Protocol.from_dict(record.protocol)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        stored = {k: v for k, v in record.train_config.items() if k in fields}
        tcfg = TrainConfig(**stored)
        tcfg.validate()
    except (TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
    check_vocab_matches(run_dir, vocab, protocol)
    # checked before the run folder is touched (status, metrics); by rank 0 alone under torchrun, because
    # finding the checkpoint completes a swap a kill interrupted (a write)
    if is_main_process() and has_checkpoint(run_dir):
        check_checkpoint(run_dir)
    for key, val in (train_options or {}).items():
        if val is not None:
            stored[key] = parse_duration(val) if key == "time_budget" else val
    tcfg = TrainConfig(**stored)
    tcfg.validate()
    check_train_config(tcfg)
    _check_launch(cls, tcfg, record.kind)
    texts, cached = {}, {}
    for split, info in record.data.items():
        if not isinstance(info, dict) or not info.get("sha256") or not (info.get("path") or info.get("source")):
            raise ModelError(f"{run_dir}: run.json's data entry for {split!r} is damaged (no path and sha256)")
        enc = None if "source" in info else cached_split(info["path"], vocab, protocol, log)
        if enc is not None:  # the token file was found by the file's current hash: still the recorded one?
            check_recorded(enc.sha256, enc.name, info, run_dir, split, "cannot resume")
            cached[split] = enc
        else:
            texts[split] = read_recorded(info, run_dir, split, "cannot resume")
    encoded = encode_splits(texts, vocab, protocol, log, cached)
    _check_stream_fits(cls, tcfg, protocol, encoded["train"])
    return _train_torch(cls, config, tcfg, vocab, protocol, encoded, record.data, run_dir, log,
                        progress=progress, resume_record=record)
