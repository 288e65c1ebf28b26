"""A train request and its checks: the model family and config, the training config, the protocol and
the task resolved from options alone, before any data is read (so a lineup can refuse a bad option
before its first run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import build_config, parse_sets
from ..data.corpus import (is_parallel)
from ..data.vocab import Vocab
from ..defaults import (LEVEL, SHORT_BUDGET_SECONDS, SHORT_BUDGET_TRAIN, context_for, is_short_budget,
                        min_count_or_default)
from ..errors import UsageError, only_for
from ..models import Family, descriptor, flag_options, is_neural, neural_kinds, parse_spec
from ..protocol import Protocol
from ..validate import (check_model_config, check_seed,
                       check_train_config)


@dataclass
class TrainRequest:
    """Everything `lmkit train` needs; fields mirror the CLI flags (None = default: lmkit.defaults, one set of
    defaults for every command; `with_defaults` fills them in)."""

    model: str = "ngram"
    corpus: str | Path | None = None
    train: str | Path | None = None
    valid: str | Path | None = None
    test: str | Path | None = None
    vocab: str | Path | None = None
    level: str | None = None  # None: the vocabulary's level with --vocab, else defaults.LEVEL
    lowercase: bool | None = None
    normalize: str | None = None
    min_count: int | None = None  # None: defaults.MIN_COUNT (refused beside --vocab when given)
    max_size: int | None = None
    context: str | None = None  # None: defaults.context_for(task): stream, sentence for translation
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


def is_torch_family(cls) -> bool:
    """Trained by lmkit.train with a TrainConfig: what the family's descriptor declares (Family.neural)."""
    return is_neural(getattr(cls, "kind", None))


def _split_sets(cls, sets: list[str]) -> tuple[list[str], list[str]]:
    """--set pairs for the model's Config vs the TrainConfig (torch families only)."""
    if not is_torch_family(cls):
        return list(sets), []
    import dataclasses

    from ..train import TrainConfig

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
    """(family class, config) from a spec like 'ngram:kn5' plus flags and --set pairs; the family's
    descriptor says which flags it owns and how large its sizes may be."""
    kind, from_spec = parse_spec(spec)
    fam = descriptor(kind)
    cls = fam.model_class
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
    _refuse_foreign_options(fam, cls.Config, options)
    try:
        config = build_config(cls.Config, values)
    except ValueError as exc:  # a module's own validation (e.g. d_model % heads)
        raise UsageError(f"{spec}: {exc}") from None
    check_given = getattr(config, "check_given", None)  # options its other settings would ignore (n-gram k)
    if check_given is not None:
        check_given(k for k, v in values.items() if v is not None)
    check_model_config(spec, config, fam.limits)
    return cls, config


def given_model_keys(req: TrainRequest) -> set[str]:
    """Config fields the request sets itself (flags, library options, --set pairs): defaults never override them."""
    keys = {k for k, v in req.options.items() if v is not None}
    return keys | {pair.partition("=")[0].strip().replace("-", "_") for pair in req.sets}


def with_vocab_defaults(config, vocab: Vocab, req: TrainRequest):
    """The config with the defaults that depend on the vocabulary filled in: adaptive-softmax cutoffs derived
    from its counts (models.adaptive.derived_cutoffs; () when a full softmax is cheaper), for families that
    have them and unless the request sets adaptive_cutoffs (`--set adaptive_cutoffs=none`: a full softmax)."""
    if (not hasattr(config, "adaptive_cutoffs") or "adaptive_cutoffs" in given_model_keys(req)
            or getattr(config, "full_softmax_only", False)):
        return config
    from ..models.adaptive import derived_cutoffs

    return dataclasses.replace(config, adaptive_cutoffs=derived_cutoffs(vocab.counts))


def with_budget_defaults(cls, config, tcfg, req: TrainRequest) -> tuple[Any, Any, dict]:
    """(config, training config, what was filled in) for a short time budget (lmkit.defaults.is_short_budget):
    the family's short-budget shape (its lineup preset) unless the request sets one of its options, and the
    short-budget training settings it does not set. A longer budget, or none, leaves both as they are."""
    if tcfg is None or not is_short_budget(tcfg.time_budget):
        return config, tcfg, {}
    shape = dict(descriptor(cls.kind).lineup.options)
    filled: dict = {}
    if shape and not (given_model_keys(req) & set(shape)):
        config = dataclasses.replace(config, **shape)
        filled.update(shape)
    train = {k: v for k, v in SHORT_BUDGET_TRAIN.items() if getattr(tcfg, k) is None}
    if train:
        tcfg = dataclasses.replace(tcfg, **train)
        filled.update(train)
    return config, tcfg, filled


def describe_budget_defaults(filled: dict, time_budget: float) -> str:
    """The log line naming what a short budget chose, and how to choose otherwise."""
    settings = ", ".join(f"{k}={v}" for k, v in filled.items())
    return (f"short budget ({time_budget:g} s <= {SHORT_BUDGET_SECONDS:g} s): {settings} "
            "(set any of them to choose yourself)")


def _refuse_foreign_options(fam: Family, config_cls: type, options: dict) -> None:
    """A train flag the family does not own (Family.options), or a key its Config lacks, is refused in one line.

    Library callers may pass any Config field in `options` (a lineup's adaptive_cutoffs); only the keys some
    family owns as flags are held to the family's list."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    flags = flag_options()
    foreign = [k for k, v in options.items() if v is not None and
               (k not in names or (k in flags and k not in fam.options))]
    if foreign:
        raise UsageError(f"option(s) {', '.join(foreign)} do not apply to {config_cls.__name__}; "
                         f"valid keys: {', '.join(sorted(names))}")


def train_config(cls, req: TrainRequest):
    from ..train import TrainConfig, parse_duration

    values = {k: v for k, v in req.train_options.items() if v is not None}
    if "time_budget" in values:
        values["time_budget"] = parse_duration(values["time_budget"])
    values.update(parse_sets(TrainConfig, _split_sets(cls, req.sets)[1]))
    values.setdefault("seed", req.seed)
    cfg = build_config(TrainConfig, values)
    cfg.validate()
    check_train_config(cfg)
    return cfg


def protocol_for(req: TrainRequest, vocab: Vocab | None, task: str = "lm") -> Protocol:
    if vocab is None:
        return Protocol(level=req.level or LEVEL, lowercase=bool(req.lowercase), normalize=req.normalize,
                        context=context_for(task, req.context), keep_blank_lines=req.keep_blank_lines, task=task)
    for name, asked, have in (("level", req.level, vocab.level), ("lowercase", req.lowercase, vocab.lowercase),
                              ("normalize", req.normalize, vocab.normalize)):
        if asked is not None and asked != have:
            raise UsageError(f"--vocab was built with {name}={have} but this run asks for {name}={asked}; "
                             "use a matching vocabulary or drop the option")
    protocol = Protocol(level=vocab.level, lowercase=vocab.lowercase, normalize=vocab.normalize,
                        context=context_for(task, req.context), keep_blank_lines=req.keep_blank_lines, task=task)
    if task == "translate" and not vocab.has_sep:
        raise UsageError(f"--vocab {req.vocab} has no <sep> (id 4): --task translate needs a joint vocabulary "
                         "built for a parallel corpus")
    return protocol


def task_for(req: TrainRequest) -> str:
    """The task asked for, or inferred: translate when --src/--tgt are given or --corpus is a pair."""
    if req.task is not None:
        return req.task
    if req.src is not None or req.tgt is not None:
        return "translate"
    if req.corpus is not None and req.train is None and is_parallel(req.corpus):
        return "translate"
    return "lm"


def with_defaults(req: TrainRequest) -> TrainRequest:
    """The request with every shared default filled in (lmkit.defaults): context by task; level and min-count
    when it builds its own vocabulary (with --vocab they are the vocabulary's)."""
    task = task_for(req)
    filled = {"context": context_for(task, req.context), "task": task}
    if req.vocab is None:
        filled.update(level=req.level or LEVEL, min_count=min_count_or_default(req.min_count))
    return dataclasses.replace(req, **filled)


def describe_settings(req: TrainRequest, vocab: Vocab, protocol: Protocol) -> str:
    """The run summary's settings line: level, vocabulary (min-count) and context as used, each marked when it
    is the shared default (lmkit.defaults), so a run can be matched against a lineup at a glance."""
    from .. import defaults

    def mark(text: str, value, default) -> str:
        return f"{text} (default)" if value == default else text

    source = (f"vocabulary {req.vocab} (min-count {vocab.min_count})" if req.vocab is not None
              else mark(f"min-count {vocab.min_count}", vocab.min_count, defaults.MIN_COUNT))
    return (f"settings: {mark(f'{protocol.level} level', protocol.level, defaults.LEVEL)}, {source}, "
            f"{mark(f'{protocol.context} context', protocol.context, context_for(protocol.task))}"
            + (", translation" if protocol.task == "translate" else ""))


def check_request(req: TrainRequest):
    """(family class, model config, TrainConfig or None) with every option checked and no data read, so
    a lineup or a learning curve can refuse a bad option before its first training run."""
    check_seed(req.seed)
    if req.vocab is not None and (req.min_count is not None or req.max_size is not None):
        raise UsageError("--min-count and --max-size build a vocabulary; with --vocab that vocabulary is used as "
                         "it is (drop them, or drop --vocab)")
    Vocab.check_options(min_count_or_default(req.min_count), req.max_size)
    cls, config = resolve_model(req.model, req.options, req.sets)
    counting_plan(req, cls)  # --memory/--engine with a neural family: refused before torch is imported
    tcfg = train_config(cls, req) if is_torch_family(cls) else None
    if tcfg is None and any(v is not None for v in req.train_options.values()):
        given = [f"--{k.replace('_', '-')}" for k, v in req.train_options.items() if v is not None]
        raise UsageError(only_for(given, f"neural models ({', '.join(neural_kinds())})"))
    if tcfg is not None:  # fail on an unusable device before reading any data
        from ..device import resolve_device, resolve_precision

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
    from ..models.ngram.resources import CountingPlan

    return CountingPlan.from_options(req.memory, req.tmp, req.engine, req.scheduler)


def list_models() -> list[dict]:
    """Every registered family (lmkit.models.families), its description and its Config fields with
    defaults; a neural family's training options with its own defaults."""
    from ..config import describe
    from ..models import families

    rows = []
    for fam in families():
        doc = (fam.model_class.__doc__ or "").strip().splitlines()
        options = [{**o, **short_budget_default(fam, o["name"]), **vocab_default(o["name"])}
                   for o in describe(fam.config_class)]
        if fam.neural:
            from ..train import TrainConfig

            options += [{**o, "default": fam.defaults.get(o["name"], o["default"]),
                         **short_budget_default(fam, o["name"])} for o in describe(TrainConfig)]
        rows.append({"family": fam.kind, "description": doc[0] if doc else "", "options": options})
    return rows


def short_budget_default(fam: Family, option: str) -> dict:
    """How `lmkit models` shows an option a short time budget sets (with_budget_defaults), and why."""
    shape = dict(fam.lineup.options) if fam.neural else {}
    value = shape.get(option, SHORT_BUDGET_TRAIN.get(option) if fam.neural else None)
    if value is None:
        return {}
    return {"why": f"--time-budget <= {SHORT_BUDGET_SECONDS:g}s: {value} (a few hundred updates suit a smaller "
                   "model; any option you set wins)"}


def vocab_default(option: str) -> dict:
    """How `lmkit models` shows a default set from the data (with_vocab_defaults, the training loop), and why."""
    if option == "unigram_init":
        return {"why": "output bias starts at the train split's log unigram frequencies: step 0 scores about the "
                       "unigram perplexity, not the uniform one"}
    if option == "adaptive_cutoffs":
        from ..models.adaptive import HEAD_SHARE, MIN_ADAPTIVE_VOCAB

        return {"default": "derived", "why": f"from the vocabulary's counts (shortlist: {HEAD_SHARE:.0%} of the "
                f"tokens): a cheaper output layer; none below {MIN_ADAPTIVE_VOCAB:,} ids (a full softmax is cheaper "
                "there); =none: off"}
    return {}
