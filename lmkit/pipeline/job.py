"""A train request resolved once into a Job: family and config, training config (with the family's
defaults filled in, once), protocol, splits, vocabulary, encoded data and output folder.

Everything downstream (fit, measure, the run writer) takes the Job, not a dozen loose arguments. A
resumed run is resolved into the same Job from its run folder (`job_from_run`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.corpus import Encoded, check_recorded, read_recorded
from ..data.vocab import Vocab
from ..datasets.store import resolve_corpus
from ..errors import ModelError, UsageError
from ..logs import Log, quiet
from ..models import family
from ..outputs import check_output_dir
from ..protocol import Protocol
from ..runs import RunRecord, read_record
from ..validate import check_train_config
from .prepare import cached_split, encode_splits, input_paths, locate_splits, read_split, split_info, vocab_from
from .request import (TrainRequest, check_request, counting_plan, describe_budget_defaults, describe_settings,
                      given_model_keys, is_torch_family, protocol_for, task_for, with_budget_defaults, with_defaults,
                      with_vocab_defaults)


@dataclass
class Job:
    """One training job, resolved and checked; `train_config` is None for families that count (n-grams)."""

    cls: Any  # the family's model class
    config: Any  # its Config
    train_config: Any  # TrainConfig as asked (run.json records it), or None
    vocab: Vocab
    protocol: Protocol
    encoded: dict[str, Encoded]
    data: dict  # run.json's data records, per split
    out: Path | None  # None: runs/<label>-<timestamp>, chosen once the label is known
    launch: Any  # lmkit.distributed.Launch: under torchrun, rank 0 writes
    request: TrainRequest = field(default_factory=TrainRequest)
    counting: Any = None  # n-gram CountingPlan (--memory, --engine), or None
    resume_record: RunRecord | None = None  # set when the job continues a run

    @property
    def neural(self) -> bool:
        return self.train_config is not None


def effective_batch(cls, train_config) -> int:
    """The batch size training will use: the one place the family's defaults fill in an unset option."""
    from ..train import resolve_train_config

    return resolve_train_config(train_config, getattr(cls.module, "train_defaults", {})).batch_size


def check_launch(cls, train_config, spec: str):
    """The torchrun launch (lmkit.distributed.Launch); with WORLD_SIZE > 1, what cannot train data-parallel
    (n-gram counting, a global batch that does not split evenly) is refused before any file is touched."""
    from ..distributed import check_family, check_global_batch, launch_from_env

    launch = launch_from_env()
    check_family(train_config is not None, spec, launch.world_size)
    if train_config is not None and launch.world_size > 1:
        check_global_batch(effective_batch(cls, train_config), launch.world_size)
    return launch


def check_stream_fits(job: Job) -> None:
    """Stream context cuts the training stream into --batch-size parallel rows: a batch wider than the
    stream has no row to train on. Refused here, before a run folder exists, not at the first step."""
    if not job.neural or job.protocol.context != "stream":
        return
    batch = effective_batch(job.cls, job.train_config)
    targets = job.encoded["train"].num_tokens  # every token and each line's </s> (batching.stream_ids)
    if targets < batch:
        raise UsageError(f"--batch-size {batch} is more rows than the training stream has tokens ({targets}): "
                         f"stream context needs at most {targets} (or use --context sentence)")


def resolve_job(req: TrainRequest, log: Log, locks) -> tuple[Job, Log]:
    """Check every option, lock and check the output folder, read and encode the splits: the Job, and the
    log to use (quiet on torchrun ranks other than 0). `locks` (an ExitStack) holds the run lock."""
    from ..runlock import run_lock

    cls, config, tcfg = check_request(req)
    req = dataclasses.replace(req, corpus=resolve_corpus(req.corpus))  # a downloaded corpus given by name
    req = with_defaults(req)  # lmkit.defaults filled in once: the Job records what the run used
    counting = counting_plan(req, cls)
    if tcfg is not None and tcfg.seq_len is not None and req.context != "stream":
        raise UsageError("--seq-len sets the window of --context stream; sentence context trains on whole lines "
                         "(add --context stream, or drop --seq-len)")
    launch = check_launch(cls, tcfg, req.model)
    if not launch.is_main:
        log = quiet  # under torchrun rank 0 speaks (and writes) for the run
    task = task_for(req)
    # an n-gram from named files (`--train -`, as lmplz) needs no valid split; a corpus folder missing one is a mistake
    files = locate_splits(req, task, need_valid=tcfg is not None or req.corpus is not None)
    out = Path(req.output) if req.output else None
    if out is not None and launch.is_main:
        out = check_output_dir(out, req.force, inputs=input_paths(req, files))
        locks.enter_context(run_lock(out))
        check_output_dir(out, req.force, inputs=input_paths(req, files))  # again under the lock
    vocab, protocol, encoded, data = read_data(req, files, task, log)
    log(describe_settings(req, vocab, protocol))
    config, tcfg, short = with_budget_defaults(cls, config, tcfg, req)
    if short:
        log(describe_budget_defaults(short, tcfg.time_budget))
    config = with_vocab_defaults(config, vocab, req)
    if getattr(config, "adaptive_cutoffs", None) and "adaptive_cutoffs" not in given_model_keys(req):
        log(f"adaptive softmax: cutoffs {','.join(map(str, config.adaptive_cutoffs))} derived from the vocabulary "
            "(--set adaptive_cutoffs=none: a full softmax)")
    job = Job(cls, config, tcfg, vocab, protocol, encoded, data, out, launch, req, counting)
    check_stream_fits(job)
    return job, log


def read_data(req: TrainRequest, files, task: str, log: Log):
    """(vocab, protocol, encoded splits, data records): token files where cached, else the texts."""
    vocab = Vocab.load(req.vocab) if req.vocab else None
    protocol = protocol_for(req, vocab, task)
    paths = {s: files.get(s) for s in ("train", "valid", "test") if files.get(s) is not None}
    cached = {s: enc for s, p in paths.items() if (enc := cached_split(p, vocab, protocol, log)) is not None}
    texts = {s: read_split(p) for s, p in paths.items() if s not in cached}
    if vocab is None:
        vocab = vocab_from([texts["train"]], protocol, req.min_count, req.max_size, with_sep=task == "translate")
        log(f"vocabulary: {len(vocab):,} ids from {texts['train'].name}")
    encoded = encode_splits(texts, vocab, protocol, log, cached)
    return vocab, protocol, encoded, {s: split_info(texts.get(s), encoded[s]) for s in paths}


def job_from_run(run_dir: Path, train_options: dict | None, log: Log) -> Job:
    """The Job that continues a neural run: everything as stored, budgets given again replacing the stored
    ones; every recorded file re-read and checked against its sha256."""
    from ..distributed import is_main_process
    from ..runs import check_vocab_matches
    from ..train import check_checkpoint, has_checkpoint

    record = read_record(run_dir)
    cls = _run_family(run_dir, record)
    vocab = Vocab.load(run_dir / "vocab.json")
    if vocab.vocab_id != record.vocab_id:
        raise ModelError(f"{run_dir}: vocab.json does not match run.json")
    config, protocol, stored = _stored_configs(run_dir, cls, record)
    check_vocab_matches(run_dir, vocab, protocol)
    # checked before the run folder is touched (status, metrics); by rank 0 alone under torchrun, because
    # finding the checkpoint completes a swap a kill interrupted (a write)
    if is_main_process() and has_checkpoint(run_dir):
        check_checkpoint(run_dir)
    tcfg = _resumed_train_config(stored, train_options)
    launch = check_launch(cls, tcfg, record.kind)
    encoded = _reread_splits(run_dir, record, vocab, protocol, log)
    job = Job(cls, config, tcfg, vocab, protocol, encoded, record.data, run_dir, launch, resume_record=record)
    check_stream_fits(job)
    return job


def _run_family(run_dir: Path, record: RunRecord):
    try:
        cls = family(record.kind)
    except UsageError:
        raise ModelError(f"{run_dir}: unknown model kind {record.kind!r} in run.json") from None
    if not is_torch_family(cls):
        raise UsageError(f"{run_dir}: only neural runs can be resumed (this is a {record.kind} run)")
    return cls


def _stored_configs(run_dir: Path, cls, record: RunRecord):
    """(model config, protocol, stored TrainConfig fields) from run.json, each checked."""
    from ..config import config_from_dict
    from ..train import TrainConfig

    try:
        config = config_from_dict(cls.Config, record.config)
        protocol = Protocol.from_dict(record.protocol)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        stored = {k: v for k, v in record.train_config.items() if k in fields}
        TrainConfig(**stored).validate()
    except (TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
    return config, protocol, stored


def _resumed_train_config(stored: dict, train_options: dict | None):
    from ..train import TrainConfig, parse_duration

    for key, val in (train_options or {}).items():
        if val is not None:
            stored[key] = parse_duration(val) if key == "time_budget" else val
    tcfg = TrainConfig(**stored)
    tcfg.validate()
    check_train_config(tcfg)
    return tcfg


def _reread_splits(run_dir: Path, record: RunRecord, vocab: Vocab, protocol: Protocol, log: Log):
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
    return encode_splits(texts, vocab, protocol, log, cached)
