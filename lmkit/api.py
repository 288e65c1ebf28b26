"""The library facade the CLI and the tests call: build_vocab, train, score, export_arpa.

No printing here: progress goes through the `log` callable, results are returned as objects."""

from __future__ import annotations

import math
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_dir
from .config import build_config, parse_sets
from .data.corpus import (Encoded, ParallelText, Text, check_recorded, count_tokens, encode, is_parallel, locate,
                          locate_pairs, read_pair, read_recorded, read_text)
from .data.vocab import SEP, Vocab
from .errors import DataError, ModelError, UsageError, only_for
from .evaluate.perplexity import Score, score_encoded
from .models import family, parse_spec
from .outputs import check_output_dir
from .protocol import Protocol
from .runs import RunRecord, append_metrics, load_run, read_record, versions, write_record
from .validate import (check_device_name, check_model_config, check_output_file, check_seed,
                       check_train_config)
from .logs import Log, quiet




# -- vocabularies -----------------------------------------------------------------------------------
def build_vocab(
    paths: list[str | Path | Text] | str | Path | Text,
    *,
    level: str = "word",
    lowercase: bool = False,
    normalize: str | None = None,
    min_count: int = 1,
    max_size: int | None = None,
    output: str | Path | None = None,
    with_sep: bool = False,
) -> Vocab:
    """Count tokens of the given training text(s) and keep the frequent ones; optionally save.

    `with_sep`: a joint vocabulary for a parallel corpus (both sides' files given), <sep> as id 4. A text
    already read (a Text) is counted as it is, not read again."""
    protocol = Protocol(level=level, lowercase=lowercase, normalize=normalize)
    Vocab.check_options(min_count, max_size)
    paths = [paths] if isinstance(paths, (str, Path, Text)) else list(paths)
    if output is not None:
        check_output_file(output, inputs=[p for p in paths if not isinstance(p, Text)])
    if sum(str(p) == "-" for p in paths) > 1:
        raise UsageError("'-' (stdin) is given more than once; stdin can be read once")
    counts: Counter = Counter()
    for p in paths:
        counts.update(count_tokens(p if isinstance(p, Text) else read_text(p), protocol))
    vocab = Vocab.build(counts, level=level, lowercase=lowercase, normalize=normalize,
                        min_count=min_count, max_size=max_size, with_sep=with_sep)
    if output is not None:
        vocab.save(output)
    return vocab


def vocab_report(vocab_path: str | Path, coverage: str | Path | None = None, top: int = 20) -> dict:
    """Size, options, most frequent tokens and (optionally) OOV rate on a text."""
    if top < 0:
        raise UsageError(f"--top must be at least 0, got {top}")
    vocab = Vocab.load(vocab_path)
    first = 5 if vocab.has_sep else 4  # after the reserved ids
    order = sorted(range(first, len(vocab)), key=lambda i: -vocab.counts[i])[:top]
    total = sum(vocab.counts)
    report: dict[str, Any] = {
        "vocab_id": vocab.vocab_id,
        "size": len(vocab),
        "level": vocab.level,
        "lowercase": vocab.lowercase,
        "min_count": vocab.min_count,
        "max_size": vocab.max_size,
        "train_tokens": total,
        "train_unk_tokens": vocab.counts[1],
        "top": [{"token": vocab.tokens[i], "count": vocab.counts[i],
                 "share": vocab.counts[i] / total if total else 0.0} for i in order],
    }
    if coverage is not None:
        protocol = Protocol(level=vocab.level, lowercase=vocab.lowercase, normalize=vocab.normalize)
        text = read_text(coverage)
        counts = count_tokens(text, protocol)
        n = sum(counts.values())
        oov_types = [t for t in counts if t not in vocab.index or t in ("<pad>", "<s>", "</s>")]
        oov = sum(counts[t] for t in oov_types) + counts.get("<unk>", 0)
        report["coverage"] = {
            "file": text.name,
            "tokens": n,
            "types": len(counts),
            "oov_tokens": oov,
            "oov_types": len(oov_types),
            "oov_rate": oov / n if n else 0.0,
        }
    return report


# -- token files ------------------------------------------------------------------------------------
@dataclass
class EncodedSplit:
    """One split's token file, as `lmkit encode` reports it."""

    split: str
    file: str
    sequences: int
    tokens: int  # scored tokens: ids plus one </s> per sequence
    dtype: str
    bytes: int  # of ids.bin, offsets.bin and lines.bin
    path: Path
    reused: bool

    def row(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def encode_corpus(corpus: str | Path | None = None, vocab: str | Path | None = None, *,
                  train: str | Path | None = None, valid: str | Path | None = None, test: str | Path | None = None,
                  splits: list[str] | str | None = None, context: str = "sentence", keep_blank_lines: bool = False,
                  log: Log = quiet) -> list[EncodedSplit]:
    """Encode each split once into a memory-mapped token file in the cache, or find the one already there;
    `lmkit train --vocab` and `lmkit score` then read ids from it instead of the text (lmkit.data.tokenfile).

    The protocol is built as `train` builds it (level, case and normalisation come from the vocabulary).
    `splits` (default: every split found) must all exist; plain language-model corpora only."""
    from .data.tokenfile import encode_file

    if vocab is None:
        raise UsageError("lmkit encode needs --vocab: token ids index one vocabulary (build one with "
                         "`lmkit vocab build TRAIN_FILE -o vocab.json`)")
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    unknown = [s for s in splits or () if s not in ("train", "valid", "test")]
    if unknown or splits == []:
        raise UsageError(f"--splits takes train, valid and/or test, comma-separated; got {','.join(splits or [])!r}")
    if corpus is None and train is None and valid is None and test is None:
        raise UsageError("give --corpus DIR, or the files with --train/--valid/--test FILE")
    if corpus is not None and train is None and is_parallel(corpus):
        raise UsageError(f"{corpus} is a parallel corpus; token files hold plain language-model text, so "
                         "translation runs read their pairs from the text files")
    files = locate(corpus, train, valid, test, need=tuple(splits or ()))
    names = list(splits or [s for s in ("train", "valid", "test") if files.get(s) is not None])
    if not names:
        raise DataError(f"{corpus}: no train, valid or test file found (expected files such as train.txt)")
    v = Vocab.load(vocab)
    protocol = _protocol_for(TrainRequest(vocab=vocab, context=context, keep_blank_lines=keep_blank_lines), v)
    results = []
    for split in names:
        path = files.get(split)
        found, reused = encode_file(path, v, protocol, log=log)
        if reused:
            log(f"tokens: reusing {found.path}")
        results.append(EncodedSplit(split, str(Path(path)), found.counts["sequences"], found.counts["tokens"],
                                    found.dtype, found.nbytes, found.path, reused))
    return results


# -- training ---------------------------------------------------------------------------------------
@dataclass
class TrainRequest:
    """Everything `lmkit train` needs; fields mirror the CLI flags (None = default)."""

    model: str = "ngram"
    corpus: str | Path | None = None
    train: str | Path | None = None
    valid: str | Path | None = None
    test: str | Path | None = None
    vocab: str | Path | None = None
    level: str | None = None
    lowercase: bool | None = None
    normalize: str | None = None
    min_count: int = 1
    max_size: int | None = None
    context: str = "sentence"
    keep_blank_lines: bool = False
    task: str | None = None  # lm | translate; None: translate when src/tgt are given or the corpus is a pair
    src: str | None = None  # parallel corpus: suffix of the source files (de for train.de)
    tgt: str | None = None  # parallel corpus: suffix of the target files
    options: dict = field(default_factory=dict)  # family options from flags (order, layers, ...)
    train_options: dict = field(default_factory=dict)  # TrainConfig fields from flags (lr, epochs, ...)
    sets: list[str] = field(default_factory=list)  # --set key=value (model or training field)
    output: str | Path | None = None
    runs_dir: str | Path = "runs"
    force: bool = False
    seed: int = 0
    progress: bool = True
    # n-gram counting resources (not model settings: they never change the counts or the run's identity)
    memory: str | int | None = None  # bound on counting/smoothing buffers, e.g. "4G": count out of core
    tmp: str | Path | None = None  # folder for the spill files (default: the system temp folder)
    engine: str | None = None  # local (default) or dask
    scheduler: str | None = None  # dask: tcp://host:port or local[:N]


def _parse_k(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    if str(value).lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"--k expects a number or 'auto', got {value!r}") from None


def _is_torch_family(cls) -> bool:
    return bool(getattr(cls, "checkpoints", False))


def _split_sets(cls, sets: list[str]) -> tuple[list[str], list[str]]:
    """--set pairs for the model's Config vs the TrainConfig (torch families only)."""
    if not _is_torch_family(cls):
        return list(sets), []
    import dataclasses

    from .train import TrainConfig

    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = {f.name for f in dataclasses.fields(cls.Config)}
    model_sets, train_sets = [], []
    for pair in sets:
        key = pair.partition("=")[0].strip().replace("-", "_")
        if key in train_keys and key not in model_keys:
            train_sets.append(pair)
        elif key in model_keys:
            model_sets.append(pair)
        else:
            raise UsageError(f"unknown setting {key!r}; valid keys: {', '.join(sorted(model_keys | train_keys))}")
    return model_sets, train_sets


def resolve_model(spec: str, options: dict, sets: list[str]):
    """(family class, config) from a spec like 'ngram:kn5' plus flags and --set pairs."""
    kind, from_spec = parse_spec(spec)
    cls = family(kind)
    values = dict(from_spec)
    for key, val in options.items():
        if val is None:
            continue
        if key in from_spec and from_spec[key] != val:
            raise UsageError(f"--{key.replace('_', '-')} {val} contradicts --model {spec}")
        values[key] = val
    if "k" in values:
        values["k"] = _parse_k(values["k"])
    set_values = parse_sets(cls.Config, _split_sets(cls, sets)[0])
    for key, val in set_values.items():
        if key in values and values[key] != val:
            raise UsageError(f"--set {key}={val} contradicts {'--model ' + spec if key in from_spec else '--' + key}")
    values.update(set_values)
    try:
        config = build_config(cls.Config, values)
    except ValueError as exc:  # a module's own validation (e.g. d_model % heads)
        raise UsageError(f"{spec}: {exc}") from None
    if kind == "ngram":
        _check_smoothing_options(config, values)
    check_model_config(spec, config)
    return cls, config


# n-gram options that only one smoothing family reads: given with another, they would be silently ignored
_SMOOTHING_OPTIONS = {"k": ("addk",), "alpha": ("stupid",), "katz_k": ("katz",), "jm_lambdas": ("jm",),
                      "discount_fallback": ("kn", "kn-basic")}


def _check_smoothing_options(config, values: dict) -> None:
    for key, smoothings in _SMOOTHING_OPTIONS.items():
        if values.get(key) is not None and config.smoothing not in smoothings:
            flag = "--k" if key == "k" else f"--set {key}"
            raise UsageError(f"{flag} applies to {' and '.join(smoothings)} smoothing, not {config.smoothing}")


def _train_config(cls, req: TrainRequest):
    from .train import TrainConfig, parse_duration

    values = {k: v for k, v in req.train_options.items() if v is not None}
    if "time_budget" in values:
        values["time_budget"] = parse_duration(values["time_budget"])
    values.update(parse_sets(TrainConfig, _split_sets(cls, req.sets)[1]))
    values.setdefault("seed", req.seed)
    cfg = build_config(TrainConfig, values)
    cfg.validate()
    check_train_config(cfg)
    return cfg


def _protocol_for(req: TrainRequest, vocab: Vocab | None, task: str = "lm") -> Protocol:
    if vocab is None:
        return Protocol(level=req.level or "word", lowercase=bool(req.lowercase), normalize=req.normalize,
                        context=req.context, keep_blank_lines=req.keep_blank_lines, task=task)
    for name, asked, have in (("level", req.level, vocab.level), ("lowercase", req.lowercase, vocab.lowercase),
                              ("normalize", req.normalize, vocab.normalize)):
        if asked is not None and asked != have:
            raise UsageError(f"--vocab was built with {name}={have} but this run asks for {name}={asked}; "
                             "use a matching vocabulary or drop the option")
    protocol = Protocol(level=vocab.level, lowercase=vocab.lowercase, normalize=vocab.normalize,
                        context=req.context, keep_blank_lines=req.keep_blank_lines, task=task)
    if task == "translate" and not vocab.has_sep:
        raise UsageError(f"--vocab {req.vocab} has no <sep> (id 4): --task translate needs a joint vocabulary "
                         "built for a parallel corpus")
    return protocol


def _task_for(req: TrainRequest) -> str:
    """The task asked for, or inferred: translate when --src/--tgt are given or --corpus is a pair."""
    if req.task is not None:
        return req.task
    if req.src is not None or req.tgt is not None:
        return "translate"
    if req.corpus is not None and req.train is None and is_parallel(req.corpus):
        return "translate"
    return "lm"


def _locate_splits(req: TrainRequest, task: str):
    """CorpusFiles (one path per split) or, for translate, ParallelFiles ((source, target) per split)."""
    if task != "translate":
        if req.src is not None or req.tgt is not None:
            raise UsageError("--src/--tgt choose the two sides of a parallel corpus; they apply to --task translate")
        return locate(req.corpus, req.train, req.valid, req.test, need=("train", "valid"))
    given = [flag for flag, v in (("--train", req.train), ("--valid", req.valid), ("--test", req.test)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} name single files; --task translate reads pairs from --corpus "
                         "(train.src + train.tgt, or train.de + train.en with --src de --tgt en)")
    if req.corpus is None:
        raise UsageError("--task translate needs --corpus: a folder with train and valid pairs "
                         "(train.src + train.tgt, or train.de + train.en with --src de --tgt en)")
    Protocol(context=req.context, task=task)  # translate in stream context fails before any file is read
    return locate_pairs(req.corpus, req.src, req.tgt, need=("train", "valid"))


def _input_paths(req: TrainRequest, files) -> list:
    """Every path `train` reads: the corpus folder, each split file (both sides of a pair), --vocab."""
    paths = [req.corpus if req.corpus is not None and Path(req.corpus).exists() else None, req.vocab]
    for split in ("train", "valid", "test"):
        found = getattr(files, split, None)
        paths.extend(found if isinstance(found, tuple) else [found])
    return paths


def _read_split(path) -> Text | ParallelText:
    return read_pair(*path) if isinstance(path, tuple) else read_text(path)


def _cached_split(path, vocab: Vocab | None, protocol: Protocol, log: Log) -> Encoded | None:
    """The split from its cached token file (`lmkit encode`), or None: then the text is read as always.

    Only a plain file under a known vocabulary can have one; finding it hashes the file, nothing more."""
    if vocab is None or path is None or isinstance(path, tuple) or str(path) == "-":
        return None
    from .data.tokenfile import lookup

    found = lookup(path, vocab, protocol, log)
    if found is None:
        return None
    log(f"tokens: reusing {found.path}")
    return found.encoded(name=str(Path(path)))


def _split_info(text: Text | ParallelText | None, enc: Encoded) -> dict:
    """The run.json data record of a split; `text` is None when it came from a token file."""
    info = {"path": enc.name, "sha256": enc.sha256, "sequences": len(enc.sequences),
            "tokens": enc.num_tokens, "skipped_blank_lines": enc.skipped_blank_lines}
    if isinstance(text, ParallelText):  # both files, each with its own hash; sha256 covers the pair
        info.update(source=text.source.name, target=text.target.name, source_sha256=text.source.sha256,
                    target_sha256=text.target.sha256)
    return info


def _default_run_dir(runs_dir: str | Path, label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")
    return Path(runs_dir) / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _encode_splits(texts: dict[str, Text], vocab: Vocab, protocol: Protocol, log: Log,
                   cached: dict[str, Encoded] | None = None) -> dict[str, Encoded]:
    """Encode the texts read; splits found as token files (`cached`) are checked the same way."""
    encoded = {**(cached or {}), **{s: encode(t, vocab, protocol) for s, t in texts.items()}}
    for s, enc in encoded.items():
        if not enc.sequences:
            raise DataError(f"{enc.name}: has no non-blank lines to {'train on' if s == 'train' else 'score'}")
        if enc.reserved_tokens:
            log(f"warning: {enc.name}: {enc.reserved_tokens} literal <s>/</s>/<pad> tokens read as <unk>")
    return encoded


def _final_metrics(model, encoded: dict[str, Encoded], log: Log, data: dict | None = None,
                   scores: dict[str, Score] | None = None) -> dict[str, dict]:
    """Summaries per split; `scores` (if given) receives the Score objects, e.g. for test_scores.npz."""
    metrics: dict[str, dict] = {}
    for split in ("valid", "test"):
        if split in encoded:
            start = time.perf_counter()
            result = score_encoded(model, encoded[split], keep=False)
            metrics[split] = result.summary()
            if scores is not None:
                scores[split] = result
            seconds = time.perf_counter() - start  # scoring speed: a column of `lmkit compare`
            metrics[split]["score_seconds"] = seconds
            metrics[split]["tokens_per_second"] = metrics[split]["tokens"] / seconds if seconds > 0 else None
            log(f"{split} perplexity: {metrics[split]['perplexity']:.3f}")
    test = (data or {}).get("test")
    if model.protocol.task == "translate" and test and "source" in test:
        metrics["bleu"] = _test_bleu(model, test, log)
    return metrics


def _save_test_scores(run_dir: Path, scores: dict[str, Score], data: dict) -> None:
    """Per-sequence test NLLs next to run.json: compare --bootstrap resamples them without rescoring."""
    from .evaluate.per_sequence import SequenceScores, save_test_scores

    if "test" in scores and (data.get("test") or {}).get("sha256"):
        save_test_scores(run_dir, SequenceScores.from_score(scores["test"], data["test"]["sha256"]))


def _test_bleu(model, test: dict, log: Log) -> dict:
    """Greedy translation BLEU on the run's test pair, the number `compare` shows."""
    from .evaluate.bleu import translation_bleu

    start = time.perf_counter()
    result = translation_bleu(model, read_recorded(test, model.label, "test"))  # unchanged since it was scored
    log(f"test BLEU: {result.score:.2f} (greedy, {result.lines} pairs, {time.perf_counter() - start:.0f} s)")
    return {"score": result.score, "signature": result.signature, "decoding": "greedy", "lines": result.lines}


def _quick_checks(model, encoded: dict[str, Encoded], log: Log) -> dict:
    """`lmkit check --quick` on the test split (else valid) for run.json. Never fatal: a failed or crashed
    check is recorded and shown by `compare`, and the trained model is kept."""
    from .check import check_model

    split = "test" if "test" in encoded else "valid"
    skip = {}
    if getattr(model, "memory", None) is not None:  # n-gram --memory: no model-sized extras
        skip = {"normalisation": "not run under --memory: full rows need an index of every n-gram by context "
                                 "(as big as the model); `lmkit check RUN` runs it",
                "save-load": "not run under --memory: it loads a second copy of the model; `lmkit check RUN` runs it"}
    try:
        report = check_model(model, encoded[split], quick=True, skip=skip)
    except Exception as exc:  # a bug in a check must not throw away a finished training run
        log(f"warning: checks could not run ({exc.__class__.__name__}: {exc})")
        return {"ok": False, "quick": True, "error": f"{exc.__class__.__name__}: {exc}"}
    for r in report.failed:
        log(f"warning: check failed: {r.name}: {r.evidence}")
    if report.ok:
        log(f"checks passed ({len(report.results)} quick checks, {report.seconds:.1f} s)")
    return report.to_dict()


def check_request(req: TrainRequest):
    """(family class, model config, TrainConfig or None) with every option checked and no data read, so
    a lineup or a learning curve can refuse a bad option before its first training run."""
    check_seed(req.seed)
    if req.vocab is not None and (req.min_count != 1 or req.max_size is not None):
        raise UsageError("--min-count and --max-size build a vocabulary; with --vocab that vocabulary is used as "
                         "it is (drop them, or drop --vocab)")
    Vocab.check_options(req.min_count, req.max_size)
    cls, config = resolve_model(req.model, req.options, req.sets)
    counting_plan(req, cls)  # --memory/--engine with a neural family: refused before torch is imported
    tcfg = _train_config(cls, req) if _is_torch_family(cls) else None
    if tcfg is None and any(v is not None for v in req.train_options.values()):
        given = [f"--{k.replace('_', '-')}" for k, v in req.train_options.items() if v is not None]
        raise UsageError(only_for(given, "neural models (mlp, lstm, transformer)"))
    if tcfg is not None:  # fail on an unusable device before reading any data
        from .device import resolve_device, resolve_precision

        resolve_precision(tcfg.precision, resolve_device(tcfg.device))
    return cls, config, tcfg


def counting_plan(req: TrainRequest, cls):
    """The n-gram CountingPlan of --memory/--tmp/--engine/--scheduler (None when none is given); refused
    for families that do not count n-grams."""
    given = {f"--{k}": v for k, v in (("memory", req.memory), ("tmp", req.tmp), ("engine", req.engine),
                                      ("scheduler", req.scheduler)) if v is not None}
    if not given:
        return None
    if cls.kind != "ngram":
        raise UsageError(only_for(list(given), f"n-gram counting, not to {cls.kind}") +
                         f" (drop {'them' if len(given) > 1 else 'it'}, or train an ngram model)")
    from .models.ngram.resources import CountingPlan

    return CountingPlan.from_options(req.memory, req.tmp, req.engine, req.scheduler)


def train(req: TrainRequest, log: Log = quiet) -> Path:
    """Fit a model on a corpus, score valid/test under the one scoring path, write a run folder.

    The run folder is locked while it is written (lmkit.runlock): a second writer is refused, not mixed in."""
    from contextlib import ExitStack

    with ExitStack() as locks:
        return _train(req, log, locks)


def _train(req: TrainRequest, log: Log, locks) -> Path:
    from .runlock import run_lock

    cls, config, tcfg = check_request(req)
    counting = counting_plan(req, cls)
    if tcfg is not None and tcfg.seq_len is not None and req.context != "stream":
        raise UsageError("--seq-len sets the window of --context stream; sentence context trains on whole lines "
                         "(add --context stream, or drop --seq-len)")
    launch = _check_launch(cls, tcfg, req.model)
    if not launch.is_main:
        log = quiet  # under torchrun rank 0 speaks (and writes) for the run
    task = _task_for(req)
    files = _locate_splits(req, task)
    out = Path(req.output) if req.output else None
    if out is not None and launch.is_main:
        out = check_output_dir(out, req.force, inputs=_input_paths(req, files))
        locks.enter_context(run_lock(out))
        check_output_dir(out, req.force, inputs=_input_paths(req, files))  # again under the lock

    vocab = Vocab.load(req.vocab) if req.vocab else None
    protocol = _protocol_for(req, vocab, task)
    paths = {s: files.get(s) for s in ("train", "valid", "test") if files.get(s) is not None}
    cached = {s: enc for s, p in paths.items() if (enc := _cached_split(p, vocab, protocol, log)) is not None}
    texts = {s: _read_split(p) for s, p in paths.items() if s not in cached}
    if vocab is None:
        vocab = Vocab.build(count_tokens(texts["train"], protocol), level=protocol.level,
                            lowercase=protocol.lowercase, normalize=protocol.normalize,
                            min_count=req.min_count, max_size=req.max_size, with_sep=task == "translate")
        log(f"vocabulary: {len(vocab):,} ids from {texts['train'].name}")
    encoded = _encode_splits(texts, vocab, protocol, log, cached)
    data = {s: _split_info(texts.get(s), encoded[s]) for s in paths}

    if tcfg is not None:
        _check_stream_fits(cls, tcfg, protocol, encoded["train"])
        if out is None:
            out = _default_run_dir(req.runs_dir, cls.kind)
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
    metrics = _final_metrics(model, encoded, log, data, scores)
    record = RunRecord(
        kind=cls.kind, label=model.label, config=asdict(config), protocol=protocol.to_dict(),
        vocab_id=vocab.vocab_id, data=data, metrics=metrics, parameters=int(model.num_parameters()),
        train_seconds=seconds, tokens_seen=encoded["train"].num_tokens, seed=req.seed, device="cpu",
        fit_info=info, versions=versions(), checks=_quick_checks(model, encoded, log),
    )
    if out is None:
        out = _default_run_dir(req.runs_dir, model.label)
        locks.enter_context(run_lock(out))
    with atomic_dir(out, replace=req.force, log=log) as tmp:
        vocab.save(tmp / "vocab.json")
        model.save(tmp)
        append_metrics(tmp, [{"step": 0, "tokens_seen": record.tokens_seen, "seconds": seconds,
                              "valid_ppl": metrics.get("valid", {}).get("perplexity")}])
        _save_test_scores(tmp, scores, data)
        write_record(tmp, record)
    return out


def _check_launch(cls, tcfg, spec: str):
    """The torchrun launch (lmkit.distributed.Launch); with WORLD_SIZE > 1, what cannot train data-parallel
    (n-gram counting, a global batch that does not split evenly) is refused before any file is touched."""
    from .distributed import check_family, check_global_batch, launch_from_env

    launch = launch_from_env()
    check_family(tcfg is not None, spec, launch.world_size)
    if tcfg is not None and launch.world_size > 1:
        from .train import _resolved

        batch = _resolved(tcfg, getattr(cls.module, "train_defaults", {})).batch_size
        check_global_batch(batch, launch.world_size)
    return launch


def _check_stream_fits(cls, tcfg, protocol: Protocol, train: Encoded) -> None:
    """Stream context cuts the training stream into --batch-size parallel rows: a batch wider than the
    stream has no row to train on. Refused here, before a run folder exists, not at the first step."""
    if protocol.context != "stream":
        return
    from .train import _resolved

    batch = _resolved(tcfg, getattr(cls.module, "train_defaults", {})).batch_size
    targets = train.num_tokens  # every token and each line's </s> (batching.stream_ids)
    if targets < batch:
        raise UsageError(f"--batch-size {batch} is more rows than the training stream has tokens ({targets}): "
                         f"stream context needs at most {targets} (or use --context sentence)")


def _build_torch_model(cls, config, tcfg, vocab: Vocab, protocol: Protocol, device: str | None = None):
    """Seeded construction on the chosen device (weights identical for the same seed); `device` overrides
    tcfg.device (a torchrun rank's cuda:LOCAL_RANK) without changing what run.json records."""
    import torch

    from .device import place

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
    from .atomic import publish_dir, staging_dir
    from .distributed import is_main_process
    from .train import Interrupted

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
    from .distributed import session

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
    record.metrics = _final_metrics(model, encoded, log, record.data, scores)
    _save_test_scores(out, scores, record.data)
    record.checks = _quick_checks(model, encoded, log)
    record.versions = versions()
    write_record(out, record)
    return out


def _fit_torch(cls, config, tcfg, vocab, protocol, encoded, data, out: Path, log: Log, ranks, *,
               progress: bool, resume_record: RunRecord | None, replacing: Path | None = None):
    """(model, record, fit info): the model built on this rank's device and trained; rank 0 writes."""
    from .train import Interrupted, fit

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
    from .distributed import is_main_process
    from .runlock import run_lock

    run_dir = Path(run_dir)
    read_record(run_dir)  # a missing or foreign folder is refused before a lock file appears beside it
    if not is_main_process():  # under torchrun rank 0 holds the lock and speaks for the run
        return _resume(run_dir, train_options, quiet, False)
    with run_lock(run_dir):
        return _resume(run_dir, train_options, log, progress)


def _resume(run_dir: Path, train_options: dict | None, log: Log, progress: bool) -> Path:
    import dataclasses

    from .config import config_from_dict
    from .distributed import is_main_process
    from .runs import check_vocab_matches
    from .train import TrainConfig, check_checkpoint, has_checkpoint, parse_duration

    record = read_record(run_dir)
    try:
        cls = family(record.kind)
    except UsageError:
        raise ModelError(f"{run_dir}: unknown model kind {record.kind!r} in run.json") from None
    if not _is_torch_family(cls):
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
        enc = None if "source" in info else _cached_split(info["path"], vocab, protocol, log)
        if enc is not None:  # the token file was found by the file's current hash: still the recorded one?
            check_recorded(enc.sha256, enc.name, info, run_dir, split, "cannot resume")
            cached[split] = enc
        else:
            texts[split] = read_recorded(info, run_dir, split, "cannot resume")
    encoded = _encode_splits(texts, vocab, protocol, log, cached)
    _check_stream_fits(cls, tcfg, protocol, encoded["train"])
    return _train_torch(cls, config, tcfg, vocab, protocol, encoded, record.data, run_dir, log,
                        progress=progress, resume_record=record)


# -- scoring ----------------------------------------------------------------------------------------
def load_model(path: str | Path, device: str = "cpu"):
    """(model, record or None): a run folder or an ARPA file from any tool."""
    from .models.ngram.arpa import is_arpa_path, load_arpa

    check_device_name(device)  # also for models that never use it (n-grams), so a typo is never ignored
    p = Path(path)
    if p.is_file() and is_arpa_path(p):
        return load_arpa(p), None
    return load_run(p, device=device)


@dataclass
class ScoreResult:
    score: Score
    model: str
    protocol: dict
    file: str
    sha256: str
    words: list[list[str]] | None = None
    saved: Path | None = None  # test_scores.npz written by score(..., save=True)

    def summary(self) -> dict:
        return {**self.score.summary(), "model": self.model, "protocol": self.protocol,
                "file": self.file, "sha256": self.sha256}


def _eval_text(model, record: RunRecord | None, model_path, text_path, src, tgt) -> Text | ParallelText:
    """The text a model is evaluated on: a file for an LM; for a translation model a pair given as
    src/tgt files, by default the run's own test pair (verified against its recorded sha256)."""
    if model.protocol.task != "translate":
        if src is not None or tgt is not None:
            raise UsageError(f"--src/--tgt give a translation pair, but {model.label} is a language model (task lm); "
                             "give one FILE")
        if text_path is None:
            raise UsageError("give the FILE to evaluate ('-' reads stdin)")
        return read_text(text_path)
    if text_path is not None:
        raise UsageError(f"{model.label} translates (task translate): give a pair with --src FILE --tgt FILE, "
                         "or nothing for the run's test pair")
    if src is None and tgt is None:
        test = (record.data if record is not None else {}).get("test") or {}
        if "source" not in test:
            raise UsageError("this run has no test pair; give one with --src FILE --tgt FILE")
        return read_recorded(test, model_path, "test", "give a pair with --src FILE --tgt FILE")
    elif src is None or tgt is None:
        raise UsageError("give both --src FILE and --tgt FILE")
    return read_pair(src, tgt)


def score(model_path: str | Path, text_path: str | Path | None = None, *, src: str | Path | None = None,
          tgt: str | Path | None = None, device: str = "cpu", keep_words: bool = False,
          stride: int | None = None, save: bool = False, log: Log = quiet) -> ScoreResult:
    """Score a text file (or '-') with a run folder or ARPA file under the model's stored protocol.

    A file with a cached token file (`lmkit encode`) is scored from it, the same ids without reading text.
    A translation run scores a pair (src/tgt files, default: its test pair), target side only.
    `stride` (bounded-context neural models) moves the sliding window; it is reported with the score.
    `save`: the text is the run's own test file; store its per-sequence scores in the run folder for
    compare --bootstrap (runs trained before lmkit stored them), if they reproduce run.json's test score."""
    model, record = load_model(model_path, device=device)
    if save and record is None:
        raise UsageError(f"--save stores per-sequence scores in a run folder; {model_path} is an ARPA file")
    if save and stride is not None:
        raise UsageError("--save stores the run's own test score; --stride would change it")
    if stride is not None:
        if stride < 1:
            raise UsageError(f"--stride must be at least 1, got {stride}")
        if getattr(model, "max_len", None) is None:
            raise UsageError(f"--stride applies to models with a bounded context (transformer), not {model.label}")
        model.stride = stride
    enc = None
    if src is None and tgt is None and not keep_words:  # per-token records need the words: read the text
        enc = _cached_split(text_path, model.vocab, model.protocol, log)
    text = enc or _eval_text(model, record, model_path, text_path, src, tgt)
    if save and (record.data.get("test") or {}).get("sha256") != text.sha256:
        recorded = (record.data.get("test") or {}).get("path") or "none recorded"
        raise UsageError(f"--save needs the test file this run was measured on ({recorded}); {text.name} "
                         "is not that file (sha256 differs)")
    enc = enc or encode(text, model.vocab, model.protocol)
    words = None
    if keep_words:
        from .data.tokenize import tokenize

        lines = text.target.lines if isinstance(text, ParallelText) else text.lines  # the scored side
        words = [tokenize(lines[ln - 1], model.protocol) for ln in enc.line_numbers]
    result = score_encoded(model, enc)
    label = model.label if stride is None else f"{model.label} (stride {stride})"
    saved = _save_rescored(Path(model_path), record, result, text.sha256) if save else None
    return ScoreResult(result, label, model.protocol.to_dict(), text.name, text.sha256, words, saved)


def _save_rescored(run_dir: Path, record: RunRecord, result: Score, sha256: str) -> Path:
    """test_scores.npz for an older run, written only when the rescore reproduces its recorded test score."""
    from .evaluate.per_sequence import SequenceScores, check_against_record, save_test_scores

    scores = SequenceScores.from_score(result, sha256)
    try:
        check_against_record(scores, record)
    except ModelError as exc:
        raise ModelError(f"{run_dir}: this score does not reproduce the run's recorded test score "
                         f"({exc.message}); nothing saved") from None
    return save_test_scores(run_dir, scores)


def check(run: str | Path, text: str | Path | None = None, *, quick: bool = False, device: str = "cpu"):
    """lmkit.check.CheckReport for a run folder (or ARPA file): normalisation, causality, batch invariance,
    save -> load, measured on `text` (default: the run's test file), so its numbers can be trusted."""
    from .check import check_run

    return check_run(run, text, quick=quick, device=device)


def verify(*, quick: bool = False, corpus: str | Path | None = None, reference: str | Path | None = None,
           cases: list[str] | None = None, skip_neural: bool = False, keep: str | Path | None = None,
           log: Log = quiet, progress: bool = False):
    """lmkit.verify.VerifyReport: lmkit's numbers against references it does not compute (hand values,
    nltk.lm, sacrebleu, published and KenLM perplexities). Quick cases always; `corpus` (PTB) adds the
    full ones; `cases` are names or globs. Run folders go to a temporary folder unless `keep`."""
    from .verify import verify as run_verify

    return run_verify(quick=quick, corpus=corpus, reference=reference, names=cases, skip_neural=skip_neural,
                      keep=keep, log=log, progress=progress)


def verify_cases(*, corpus: str | Path | None = None, reference: str | Path | None = None,
                 cases: list[str] | None = None, skip_neural: bool = False) -> list[dict]:
    """The verify registry (every case, or those matching `cases`) as rows, without running anything."""
    from .verify import plan

    chosen = plan(corpus=corpus, reference=reference, names=cases, skip_neural=skip_neural, listing=True)
    return [c.describe() for c in chosen.cases]


def export_arpa(run_path: str | Path, output: str | Path) -> Path:
    """Write a run's n-gram model as an ARPA file (plain or .gz) readable by KenLM and SRILM."""
    from .models.ngram.arpa import write_arpa

    check_output_file(output, inputs=[run_path], run_folders=[run_path] if Path(run_path).is_dir() else [])
    model, _ = load_model(run_path)
    if model.kind not in ("ngram", "arpa"):
        raise UsageError(f"{run_path}: only n-gram models export to ARPA (this is a {model.kind} model)")
    write_arpa(model, output)
    return Path(output)


def mix(runs: list[str | Path], output: str | Path, *, device: str = "cpu", force: bool = False,
        log: Log = quiet) -> Path:
    """Linear interpolation of comparable runs (any families), weights fitted by EM on their valid file;
    writes a run folder that score, generate and compare read like any other (see lmkit.mixing)."""
    from .mixing import build_mixture

    return build_mixture(runs, output, device=device, force=force, log=log)


# -- generation and BLEU ----------------------------------------------------------------------------
@dataclass
class GenerateResult:
    model: str
    protocol: dict
    decoding: dict
    outputs: list[dict]  # one per (prompt, sample): prompt, sample, continuation, text, tokens, logprob, finished


def _join_prompt(prompt: str, continuation: str, level: str) -> str:
    if level == "char" or not prompt.strip() or not continuation:
        return prompt + continuation
    return f"{prompt.rstrip()} {continuation}"


def generate(model_path: str | Path, prompts: list[str] | str | None = None, *,
             prompt_file: str | Path | None = None, max_tokens: int = 40, strategy: str | None = None,
             temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
             beam: int | None = None, length_penalty: float | None = None, seed: int | None = None,
             ban_unk: bool = False, num: int = 1, device: str = "cpu", log: Log = quiet) -> GenerateResult:
    """Continue prompts (strings, and/or one per line of `prompt_file`, '-' = stdin) with a model.

    Prompts are tokenised under the model's protocol; no prompt at all means one unconditional
    generation from <s>. Without a strategy, a sampling option (temperature, top_k, top_p) means
    `sample`, a beam option (beam, length_penalty) `beam`, else `greedy`; an option of another strategy
    than the one chosen is refused. Options are checked before the model is loaded (see evaluate.generate)."""
    from .data.tokenize import detokenize, tokenize
    from .evaluate.generate import Decoding
    from .evaluate.generate import generate as decode

    beam_options = [flag for flag, v in (("--beam", beam), ("--length-penalty", length_penalty)) if v is not None]
    if strategy is None:
        strategy = ("sample" if any(v is not None for v in (temperature, top_k, top_p))
                    else "beam" if beam_options else "greedy")
    if beam_options and strategy != "beam":
        raise UsageError(only_for(list(beam_options), "--strategy beam"))
    temperature = 1.0 if temperature is None else temperature
    decoding = Decoding(strategy=strategy, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, beam=4 if beam is None else beam,
                        length_penalty=0.0 if length_penalty is None else length_penalty, ban_unk=ban_unk,
                        num=num, seed=seed)
    texts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if prompt_file is not None:
        texts += read_text(prompt_file).lines
    texts = texts or [""]
    model, _record = load_model(model_path, device=device)
    translate = model.protocol.task == "translate"  # a prompt is a source sentence: <sep> follows it
    ids, reserved = [], 0
    for text in texts:
        encoded, n = model.vocab.encode(tokenize(text, model.protocol))
        ids.append([*encoded.tolist(), SEP] if translate else encoded)
        reserved += n
    if reserved:
        log(f"warning: {reserved} literal <s>/</s>/<pad> tokens in the prompts read as <unk>")
    outputs = []
    for text, outs in zip(texts, decode(model, ids, decoding)):
        for j, out in enumerate(outs):
            continuation = detokenize(model.vocab.decode(out.ids), model.protocol.level)
            outputs.append({"prompt": text, "sample": j, "continuation": continuation,
                            "text": continuation if translate else _join_prompt(text, continuation,
                                                                                 model.protocol.level),
                            "tokens": len(out.ids), "logprob": out.logprob, "finished": out.finished})
    return GenerateResult(model.label, model.protocol.to_dict(), asdict(decoding), outputs)


@dataclass
class BleuReport:
    result: Any  # evaluate.bleu.BleuResult (hypotheses, references, prompts kept there)
    model: str
    protocol: dict
    file: str
    sha256: str

    def summary(self) -> dict:
        return {**self.result.summary(), "model": self.model, "protocol": self.protocol,
                "file": self.file, "sha256": self.sha256}


def bleu(model_path: str | Path, text_path: str | Path | None = None, *, src: str | Path | None = None,
         tgt: str | Path | None = None, beam: int | None = None, length_penalty: float = 0.0,
         device: str = "cpu") -> BleuReport:
    """BLEU of a model (DESIGN.md §1, evaluate.bleu): continuation BLEU on a monolingual text file or '-';
    for a translation run, translation BLEU on a pair (src/tgt files; default: the run's test pair),
    greedy unless `beam` gives a beam width."""
    from .evaluate.generate import Decoding

    decoding = Decoding(strategy="greedy") if beam is None else Decoding(strategy="beam", beam=beam,
                                                                         length_penalty=length_penalty)
    model, record = load_model(model_path, device=device)
    return _bleu_report(model, _eval_text(model, record, model_path, text_path, src, tgt), decoding, beam)


def _bleu_report(model, text: Text | ParallelText, decoding, beam: int | None) -> BleuReport:
    """BLEU of a loaded model on a text already read: translation BLEU for a pair, else continuation BLEU."""
    from .evaluate.bleu import continuation_bleu, translation_bleu

    if isinstance(text, ParallelText):
        result = translation_bleu(model, text, decoding)
    else:
        if beam is not None:
            raise UsageError("--beam applies to translation BLEU; continuation BLEU is greedy by definition")
        result = continuation_bleu(model, text)
    return BleuReport(result, model.label, model.protocol.to_dict(), text.name, text.sha256)



def list_models() -> list[dict]:
    """Every registered family, its description and its Config fields with defaults."""
    from .config import describe
    from .models import REGISTRY

    rows = []
    for kind in REGISTRY:
        cls = family(kind)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        options = describe(cls.Config)
        if _is_torch_family(cls):
            from .train import TrainConfig

            defaults = getattr(cls.module, "train_defaults", {})
            options += [{**o, "default": defaults.get(o["name"], o["default"])} for o in describe(TrainConfig)]
        rows.append({"family": kind, "description": doc, "options": options})
    return rows


# -- comparing and plotting -------------------------------------------------------------------------
def compare(
    runs: list[str | Path] | None = None,
    *,
    corpus: str | Path | None = None,
    models: list[str] | None = None,
    time_budget: str | float | None = None,
    max_tokens: int | None = None,
    context: str | None = None,
    min_count: int | None = None,
    sort: str | None = None,
    runs_dir: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    task: str | None = None,
    src: str | None = None,
    tgt: str | None = None,
    log: Log = quiet,
    progress: bool = False,
    bleu: bool = False,
    bootstrap: int | None = None,
    confidence: float | None = None,
    seeds: int | None = None,
) -> list[dict]:
    """Rows comparing existing run folders, or (no runs) a lineup trained here on one corpus.

    No runs and no corpus means the default lineup on the bundled corpus (see lmkit.compare).
    `bleu` adds continuation BLEU on each run's own test file (translation runs already have BLEU),
    stored in the run records so that it is computed once.
    `bootstrap` N adds paired-bootstrap intervals at `confidence` (default 0.95) from each run's stored
    per-sequence test scores (resampling seeded by `seed`; no model is rescored).
    `seeds` K (lineup only) trains each neural model K times, seeds seed..seed+K-1, within the same total
    time budget, and gives one row per model: means over seeds plus sd columns (lmkit.compare.compare_seeded)."""
    from .compare import (BOOTSTRAP_COLUMNS, COLUMNS, DEFAULT_CONFIDENCE, SEED_COLUMNS, _sort_column,
                          check_bootstrap, check_seeds, compare_runs, compare_trained, train_lineup)

    # every option is checked before a lineup spends minutes training
    check_seed(seed)
    if confidence is not None and bootstrap is None:
        raise UsageError("--confidence sets the level of --bootstrap intervals; give --bootstrap N too")
    confidence = DEFAULT_CONFIDENCE if confidence is None else confidence
    if bootstrap is not None:
        check_bootstrap(bootstrap, confidence)
    if not runs:
        _check_lineup_options(models, time_budget, max_tokens, min_count, device)
    if seeds is not None and not runs:
        check_seeds(seeds)
    if sort:
        _sort_column(sort, COLUMNS + (BOOTSTRAP_COLUMNS if bootstrap is not None else ())
                     + (SEED_COLUMNS if (seeds or 1) > 1 else ()))
    groups = None
    if runs:
        lineup_only = {"--corpus": corpus, "--models": models, "--time-budget": time_budget,
                       "--max-tokens": max_tokens, "--context": context, "--min-count": min_count,
                       "-o": runs_dir, "--device": None if bleu else device,  # --bleu decodes on --device
                       "--task": task, "--src": src, "--tgt": tgt, "--seeds": seeds}
        given = [flag for flag, value in lineup_only.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} train a lineup; they do not apply to existing run folders "
                             "(give either RUNS or a lineup)")
        paths = list(runs)
    else:
        groups = train_lineup(corpus, models, time_budget, max_tokens=max_tokens, context=context,
                              min_count=min_count, device=device, seed=seed, runs_dir=runs_dir,
                              task=task, src=src, tgt=tgt, seeds=seeds or 1, log=log, progress=progress)
        paths = [path for group in groups for path in group.runs]
    if bleu:
        if runs:
            compare_runs(paths)  # refuse incomparable runs before spending time on decoding
        for path in paths:
            record_bleu(path, device=device or "cpu", log=log)
    if groups is not None:  # several seeds of a model make one row
        return compare_trained(groups, sort=sort, bootstrap=bootstrap, seed=seed, confidence=confidence)
    return compare_runs(paths, sort=sort, bootstrap=bootstrap, seed=seed, confidence=confidence)


def _check_lineup_options(models: list[str] | None, time_budget, max_tokens: int | None, min_count: int | None,
                          device: str | None) -> None:
    """A lineup's own options, before its first model trains (each model's options are checked by train)."""
    if models is not None and not models:
        raise UsageError("--models lists no model; give a comma-separated lineup such as ngram:kn5,lstm")
    for spec in models or ():  # a bad spec late in the lineup must not cost the training of the first ones
        resolve_model(spec, {}, [])
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}")
    if min_count is not None:
        Vocab.check_options(min_count, None)
    check_device_name(device)
    if time_budget is not None and not isinstance(time_budget, (int, float)):
        from .train import parse_duration

        time_budget = parse_duration(time_budget)
    if time_budget is not None and not (time_budget > 0 and math.isfinite(time_budget)):
        raise UsageError(f"--time-budget must be a finite positive duration, got {time_budget}")


def record_bleu(run: str | Path, *, device: str = "cpu", log: Log = quiet) -> dict:
    """BLEU of a run on the test file it was scored on, stored in its run.json (metrics['bleu']).

    Greedy continuation BLEU for a monolingual corpus (translation runs store theirs at training).
    Refused when the test file is gone or no longer the file the run was measured on."""
    run = Path(run)
    record = read_record(run)
    if record.metrics.get("bleu"):
        return record.metrics["bleu"]
    from .evaluate.generate import Decoding

    text = read_recorded(record.data.get("test"), run, "test", "BLEU not added")
    start = time.perf_counter()
    model, _ = load_model(run, device=device)
    result = _bleu_report(model, text, Decoding(strategy="greedy"), None).result
    record.metrics["bleu"] = {"score": result.score, "signature": result.signature, "decoding": "greedy",
                              "lines": result.lines}
    write_record(run, record)
    log(f"{run}: continuation BLEU {result.score:.2f} ({result.lines} lines, {time.perf_counter() - start:.0f} s)")
    return record.metrics["bleu"]


def plot(runs: list[str | Path], output: str | Path, log: Log = quiet) -> Path:
    """Learning curves (valid perplexity vs tokens seen and vs time) of comparable runs as an image."""
    from .plot import plot_runs

    check_output_file(output, inputs=runs, run_folders=[r for r in runs if Path(r).is_dir()])
    return plot_runs(runs, output, log=log)


def analyze(runs: list[str | Path], by: str | list[str] | None = None, *, order: int = 3,
            text: str | Path | None = None, train: str | Path | None = None, device: str = "cpu",
            log: Log = quiet):
    """Where each family wins: per-token NLL of comparable runs on their test file (or `text`), bucketed by
    train frequency of the (order-1)-token history, line length and OOV (lmkit.analyze.Analysis).

    Refused unless the runs share protocol, vocabulary and test file; the frequencies are counted in
    the recorded train file (refused if missing or changed) or in `train`."""
    from .analyze import analyze_runs

    return analyze_runs(runs, by, order=order, text=text, train=train, device=device, log=log)


def curve(corpus: str | Path | None = None, models: list[str] | None = None,
          fractions: str | list[float] | None = None, *, time_budget: str | float | None = None,
          max_tokens: int | None = None, epochs: float | None = None, context: str | None = None,
          level: str = "word", min_count: int | None = None, sets: list[str] | None = None,
          device: str | None = None, seed: int = 0, runs_dir: str | Path | None = None,
          image: str | Path | None = None, log: Log = quiet, progress: bool = False) -> list[dict]:
    """Learning curves: each model trained on nested fractions of the train split (one vocabulary from the
    full split, one protocol), scored on the full test split; one row per (model, fraction), optionally
    drawn into `image` (test perplexity vs training tokens). See lmkit.curve."""
    from .curve import learning_curve

    if image is not None:
        check_output_file(image)
    return learning_curve(corpus, models, fractions, time_budget=time_budget, max_tokens=max_tokens,
                          epochs=epochs, context=context, level=level, min_count=min_count, sets=list(sets or ()),
                          device=device, seed=seed, runs_dir=runs_dir, image=image, log=log, progress=progress)


# -- corpora: registry, downloads, splitting (lmkit.datasets) ---------------------------------------
def corpus_list() -> list[dict]:
    """One row per known corpus: name, sizes, how downloads are checked, licence, source, cached folder."""
    from .datasets.registry import CORPORA
    from .datasets.store import DamagedCorpus, cached_path

    rows = []
    for corpus in CORPORA.values():
        try:
            cached, damaged = cached_path(corpus.name), False
        except DamagedCorpus:  # listed as not cached: `lmkit corpus download NAME` fetches it again
            cached, damaged = None, True
        rows.append({"damaged": damaged, "name": corpus.name, "layout": corpus.layout,
                     "download_bytes": corpus.download_size,
                     "size_bytes": corpus.unpacked_size, "size_exact": corpus.size_exact,
                     "checksum": corpus.verified, "licence": corpus.licence, "origin": corpus.origin,
                     "source": corpus.source, "cached": cached is not None,
                     "path": str(cached) if cached else None, "description": corpus.description})
    return rows


def corpus_download(name: str, *, offline: bool | None = None, force: bool = False, mirror: str | None = None,
                    timeout: float | None = None, log: Log = quiet, progress: bool = False) -> Path:
    """Download, verify and unpack a known corpus into the cache (lmkit.cache.cache_dir('corpora'));
    its folder. Offline (`offline` or env LMKIT_OFFLINE=1) never connects: fine when cached, else
    DataError. `mirror` (or env LMKIT_CORPUS_MIRROR) fetches `<mirror>/<name>/<file>` instead of upstream."""
    from .datasets.download import DEFAULT_TIMEOUT
    from .datasets.registry import get
    from .datasets.store import install

    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    return install(get(name), offline=offline, force=force, mirror=mirror, timeout=timeout or DEFAULT_TIMEOUT,
                   log=log, progress=progress)


def corpus_path(name: str) -> Path:
    """The cached folder of a known corpus; DataError (with the download command) when not downloaded."""
    from .datasets.registry import get
    from .datasets.store import cached_path

    corpus = get(name)
    folder = cached_path(corpus.name)
    if folder is None:
        raise DataError(f"corpus {name} is not downloaded yet; run `lmkit corpus download {name}`")
    return folder


def corpus_split(source: str | Path, output: str | Path, ratios: str = "98/1/1", *, by: str = "contiguous",
                 seed: int = 0, force: bool = False) -> list[dict]:
    """Split one raw text file into `output`/train.txt, valid.txt, test.txt (lmkit.datasets.split); one row
    per split with its lines and whitespace tokens. Deterministic; the folder is written atomically."""
    from .datasets.split import split_file

    return split_file(source, output, ratios, by=by, seed=seed, force=force)
