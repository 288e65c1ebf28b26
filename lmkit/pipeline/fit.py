"""Train and resume: a request resolved into a Job (pipeline.job), fitted, measured the same way for
every family (pipeline.measure) and written by the one run writer (lmkit.runwriter): n-gram runs in one
atomic step; neural runs as they train, a --force replacement swapped in when complete."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from ..errors import ModelError, UsageError
from ..evaluate.perplexity import Score
from ..logs import Log, current, quiet
from ..memory import release_free_memory
from ..runs import RunRecord, read_record, versions
from ..runwriter import RunWriter
from .job import Job, job_from_run, resolve_job
from .measure import final_metrics, quick_checks
from .prepare import default_run_dir
from .recipe import recipe_text
from .request import TrainRequest


def train(req: TrainRequest, log: Log = quiet) -> Path:
    """Fit a model on a corpus, score valid/test under the one scoring path, write a run folder.

    The run folder is locked while it is written (lmkit.runlock): a second writer is refused, not mixed in.
    --time-budget bounds all of it, from here (lmkit.training.budget)."""
    started = time.monotonic()
    with ExitStack() as locks:
        current().phase("reading")
        job, log = resolve_job(req, log, locks)
        if job.neural:
            if job.out is None:
                job.out = default_run_dir(req.runs_dir, job.cls.kind)
                if job.launch.is_main:
                    locks.enter_context(_lock(job.out))
            return fit_neural(job, log, progress=req.progress, started=started)
        return fit_counted(job, log, locks)


def _lock(out: Path):
    from ..runlock import run_lock

    return run_lock(out)


def fit_counted(job: Job, log: Log, locks: ExitStack) -> Path:
    """An n-gram run: counted, smoothed, measured, then written in one atomic step."""
    model = job.cls(job.config, job.vocab, job.protocol)
    if job.counting is not None:
        model.counting = job.counting
    log(f"training {model.label} on {job.encoded['train'].num_tokens:,} tokens ({job.protocol.context} context)")
    start = time.perf_counter()
    info = model.fit(job.encoded["train"], job.encoded.get("valid"), log) or {}
    seconds = time.perf_counter() - start
    release_free_memory()  # counting's temporaries: not under the tables the checks load again
    scores: dict[str, Score] = {}
    metrics = final_metrics(model, job.encoded, log, job.data, scores)
    release_free_memory()
    record = RunRecord(
        kind=job.cls.kind, label=model.label, config=asdict(job.config), protocol=job.protocol.to_dict(),
        vocab_id=job.vocab.vocab_id, data=job.data, metrics=metrics, parameters=int(model.num_parameters()),
        train_seconds=seconds, tokens_seen=job.encoded["train"].num_tokens, seed=job.request.seed, device="cpu",
        fit_info=info, versions=versions(),
    )
    out = job.out
    if out is None:
        out = default_run_dir(job.request.runs_dir, model.label)
        locks.enter_context(_lock(out))
    row = {"step": 0, "tokens_seen": record.tokens_seen, "seconds": seconds,
           "valid_ppl": metrics.get("valid", {}).get("perplexity")}
    writer = RunWriter(out, replace=job.request.force, log=log, recipe=recipe_text(job.request, out))
    current().phase("writing", label=model.label)
    return writer.publish(job.vocab, model, record, scores, row,
                          checks=lambda saved: quick_checks(model, job.encoded, log, saved=saved))


def build_torch_model(job: Job, device: str | None = None):
    """Seeded construction on the chosen device (weights identical for the same seed); `device` overrides
    the configured one (a torchrun rank's cuda:LOCAL_RANK) without changing what run.json records."""
    import torch

    from ..device import place

    tcfg = job.train_config
    placement = place(device or tcfg.device, tcfg.precision, tcfg.threads)
    torch.manual_seed(tcfg.seed)
    try:
        model = job.cls(job.config, job.vocab, job.protocol, device=placement.device)
    except (RuntimeError, MemoryError) as exc:  # sizes within the limits can still exceed this machine
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError) or "allocate" in text or "out of memory" in text.lower():
            raise UsageError(f"{job.cls.kind}: the model does not fit in memory on {placement.name}; choose "
                             f"smaller sizes ({text})") from None
        raise
    model.placement = placement
    if tcfg.compile:
        model.net = torch.compile(model.net)
    return model


def fit_neural(job: Job, log: Log, *, progress: bool, started: float | None = None) -> Path:
    """A neural run, written as it trains by the run writer (rank 0 only under torchrun).

    Every process trains inside one process group (lmkit.distributed.session: up for the fit, torn down
    after it and on error); rank 0 alone writes the folder and scores the final numbers. `started`
    (time.monotonic()) is when the command began: --time-budget counts from there."""
    from ..distributed import session
    from ..train import Interrupted
    from ..training.budget import Clock

    clock = Clock(time.monotonic() if started is None else started,
                  *(job.encoded[s].num_tokens if s in job.encoded else 0 for s in ("valid", "test")))

    writer = RunWriter(job.out, log=log, recipe=None if job.resume_record else recipe_text(job.request, job.out))
    try:
        with session(job.train_config.device) as ranks:
            if not ranks.is_main:
                log, progress = quiet, False
            model, record, info = _fit_torch(job, writer if ranks.is_main else None, log, ranks, progress, clock)
        if not ranks.is_main:
            return job.out
        return _finish(job, writer, model, record, info, log, clock)
    except Interrupted as exc:
        if not writer.replacing:
            raise
        kept = writer.keep_interrupted()
        raise Interrupted(exc.message.replace(str(writer.work), str(kept)) + f"; {job.out} still holds the "
                          "previous run, untouched", exit_code=exc.exit_code) from None
    except BaseException:
        writer.abandon()
        raise


def _finish(job: Job, writer: RunWriter, model, record: RunRecord, info: dict, log: Log, clock) -> Path:
    """Rank 0: the final numbers from the best weights, measured like every family's (valid's score is the
    last validation's when training measured these weights); the folder published."""
    from ..training.budget import checks_skipped

    scored = info.pop("scored", {})
    record.status = "complete"
    record.fit_info = info
    record.train_seconds = info.get("train_seconds", 0.0)
    record.tokens_seen = info.get("tokens_seen", 0)
    record.train_config = info.get("train_config", asdict(job.train_config))
    scores: dict[str, Score] = {}
    record.metrics = final_metrics(model, job.encoded, log, record.data, scores, known=scored)
    record.checks = quick_checks(model, job.encoded, log, skip_all=checks_skipped(info.get("budget"), clock))
    record.versions = versions()
    current().phase("writing", label=model.label)
    return writer.finish(record, scores)


def _start_record(job: Job, model, device_name: str) -> RunRecord:
    """run.json as training starts: a new record, or the resumed run's with the new training config."""
    if job.resume_record is None:
        return RunRecord(kind=job.cls.kind, label=model.label, config=asdict(job.config),
                         protocol=job.protocol.to_dict(), vocab_id=job.vocab.vocab_id, data=job.data,
                         parameters=model.num_parameters(), seed=job.train_config.seed, device=device_name,
                         train_config=asdict(job.train_config), versions=versions())
    record = job.resume_record
    record.train_config = asdict(job.train_config)
    record.device = device_name
    return record


def _fit_torch(job: Job, writer: RunWriter | None, log: Log, ranks, progress: bool, clock):
    """(model, record, fit info): the model built on this rank's device and trained; `writer` on rank 0."""
    from ..train import Interrupted, fit

    model = build_torch_model(job, device=ranks.device)
    device_name = model.placement.name + (f" x {ranks.world_size} processes" if ranks.distributed else "")
    record = _start_record(job, model, device_name)
    previous, record.status = record.status, "training"
    run_dir = job.out
    if writer is not None:
        run_dir = writer.resume() if job.resume_record is not None else writer.begin(job.vocab, record)
        if job.resume_record is not None:
            writer.update(record)
    log(f"training {model.label} ({model.num_parameters():,} parameters) on {device_name}, "
        f"{model.placement.precision}, {job.protocol.context} context, "
        + (writer.where() if writer is not None else f"into {run_dir}"))
    try:
        scored: dict = {}
        info = fit(model, job.encoded["train"], job.encoded.get("valid"), job.train_config, log=log,
                   run_dir=run_dir, progress=progress, resume=job.resume_record is not None, ranks=ranks,
                   clock=clock, scored=scored)
        info = {**info, "scored": scored}
    except (Interrupted, KeyboardInterrupt):
        record.status = "interrupted"
        if model.train_state:
            record.fit_info = dict(model.train_state)
        if writer is not None:
            writer.update(record)
        raise
    except ModelError:  # a checkpoint that does not fit the model: refused before any step, record as it was
        if job.resume_record is not None and not model.train_state and writer is not None:
            record.status = previous
            writer.update(record)
        raise
    return model, record, info


def resume(run_dir: str | Path, train_options: dict | None = None, log: Log = quiet,
           progress: bool = True) -> Path:
    """Continue an interrupted, killed (status 'training') or finished neural run from its last checkpoint.

    Budgets given again replace the stored ones (e.g. more epochs); everything else is as stored.
    The folder is locked like `train`'s, so a resume never runs beside the training it continues."""
    from ..distributed import is_main_process

    started = time.monotonic()
    run_dir = Path(run_dir)
    read_record(run_dir)  # a missing or foreign folder is refused before a lock file appears beside it
    if not is_main_process():  # under torchrun rank 0 holds the lock and speaks for the run
        return fit_neural(job_from_run(run_dir, train_options, quiet), quiet, progress=False, started=started)
    with _lock(run_dir):
        current().phase("reading")
        return fit_neural(job_from_run(run_dir, train_options, log), log, progress=progress, started=started)
