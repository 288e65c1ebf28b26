"""Run folders: one directory per trained model, written atomically, read back by every command.

Layout: run.json (the record `compare` reads), vocab.json, the family's weights, metrics.jsonl, and
test_scores.npz (per-sequence test scores for `compare --bootstrap`, per-token ones for `analyze` and `report`;
evaluate/per_sequence.py).
A run is loaded only when run.json, the vocabulary and the weights agree with each other."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_open, write_json
from .errors import ModelError, UsageError
from .protocol import Protocol

SCHEMA = 1
RUN_FILE = "run.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class RunRecord:
    kind: str
    label: str
    config: dict
    protocol: dict
    vocab_id: str
    status: str = "complete"  # complete | interrupted | training
    data: dict = field(default_factory=dict)  # split -> {path, sha256, sequences, tokens}
    metrics: dict = field(default_factory=dict)  # split -> score summary
    parameters: int = 0
    train_seconds: float = 0.0
    tokens_seen: int = 0
    seed: int | None = None
    device: str = "cpu"
    fit_info: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)  # `lmkit check` outcome (CheckReport.to_dict); {} = unchecked
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    versions: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema"] = SCHEMA
        d["protocol_hash"] = Protocol.from_dict(self.protocol).hash
        d["lmkit_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "RunRecord":
        from .artifacts import check_version

        if not isinstance(data, dict) or "schema" not in data:
            raise ModelError(f"{where}: not an lmkit run record (no schema field)")
        check_version(where, "run record", data.get("schema"), SCHEMA)
        names = set(cls.__dataclass_fields__)
        try:
            rec = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ModelError(f"{where}: run record is incomplete ({exc})") from None
        if not isinstance(rec.config, dict) or not isinstance(rec.protocol, dict):
            raise ModelError(f"{where}: run record is damaged (config/protocol are not objects)")
        try:
            Protocol.from_dict(rec.protocol)
        except (TypeError, UsageError) as exc:
            raise ModelError(f"{where}: run record holds an invalid protocol ({exc})") from None
        bad = _bad_field(rec)
        if bad:
            raise ModelError(f"{where}: run record is damaged ({bad})")
        return rec


STATUSES = ("complete", "interrupted", "training")
# field -> what it must be; a hand-edited run.json that breaks one is refused before any command uses it
_FIELD_TYPES = {"kind": str, "label": str, "vocab_id": str, "status": str, "data": dict, "metrics": dict,
                "fit_info": dict, "train_config": dict, "checks": dict, "versions": dict, "device": str}


def _number(value: Any, integer: bool = False) -> bool:
    """A finite JSON number (an int when `integer`): json reads 1e999, Infinity and NaN as non-finite
    floats, which lmkit never writes (it writes null), so they are damage."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if integer else math.isfinite(value)


def _bad_field(rec: "RunRecord") -> str | None:
    """The first field of a record whose type or value cannot have been written by lmkit, described."""
    for name, kind in _FIELD_TYPES.items():
        value = getattr(rec, name)
        if not isinstance(value, kind):
            return f"{name} is {type(value).__name__}, expected {kind.__name__}"
    if rec.status not in STATUSES:
        return f"status {rec.status!r} is not one of {', '.join(STATUSES)}"
    for name, integer in (("parameters", True), ("tokens_seen", True), ("train_seconds", False)):
        value = getattr(rec, name)
        if not (_number(value, integer) and value >= 0):
            return f"{name} = {value!r} is not {'a whole' if integer else 'a finite'} number >= 0"
    if rec.seed is not None and not _number(rec.seed, True):
        return f"seed = {rec.seed!r}"
    for group in ("data", "metrics"):
        for split, entry in getattr(rec, group).items():
            if entry is not None and not isinstance(entry, dict):
                return f"{group}.{split} is {type(entry).__name__}, expected an object"
    for split, entry in rec.data.items():
        bad = entry and _bad_data(f"data.{split}", entry)
        if bad:
            return bad
    for split, entry in rec.metrics.items():
        if not entry:
            continue
        bad = (_bad_bleu(entry) if split == "bleu"
               else _bad_metrics(f"metrics.{split}", entry) or _bad_counts(split, entry, rec.data.get(split)))
        if bad:
            return bad
    fit = rec.fit_info  # compare shows these for runs that stopped early
    return _bad_range("fit_info", fit, ("train_seconds", "tokens_seen"), 0) or _bad_range(
        "fit_info", fit, ("best_valid_ppl",), 1)


def _bad_range(where: str, entry: dict, keys: tuple[str, ...], low: float, integer: bool = False) -> str | None:
    """The first of `keys` in `entry` that is neither null nor a finite number >= low, described."""
    for key in keys:
        value = entry.get(key)
        if value is not None and not (_number(value, integer) and value >= low):
            what = "a whole number" if integer else "a finite number"
            return f"{where}.{key} = {value!r} is not {what} >= {low:g}"
    return None


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _bad_data(where: str, entry: dict) -> str | None:
    """A split's data record: the hashes compare and every re-reading command trust, and its counts."""
    for key in ("sha256", "source_sha256", "target_sha256"):
        if (key == "sha256" or key in entry) and not _is_sha256(entry.get(key)):
            return f"{where}.{key} = {entry.get(key)!r} is not a sha256 (64 hex digits)"
    if not isinstance(entry.get("path"), str):
        return f"{where}.path = {entry.get('path')!r} is not a file name"
    return _bad_range(where, entry, ("sequences", "tokens", "skipped_blank_lines"), 0, integer=True)


# A perplexity is exp(nll_nats / tokens) (evaluate/perplexity.py, the one place that computes it); a value
# read back must be that, up to JSON's exact float round trip and this slack for other platforms' exp.
DERIVED_RTOL = 1e-9
# float32 models may give an OOV position a log-probability a rounding error above 0
OOV_BOUND_RTOL = 1e-6


def _bad_bleu(entry: dict) -> str | None:
    score = entry.get("score")  # sacrebleu's perfect score can come out as 100.00000000000004
    if not (_number(score) and 0 <= score <= 100 * (1 + DERIVED_RTOL)):
        return f"metrics.bleu.score = {score!r} is not a BLEU score (0 to 100)"
    return _bad_range("metrics.bleu", entry, ("lines",), 0, integer=True)


def _bad_metrics(where: str, m: dict) -> str | None:
    """A split's score summary (Score.summary): counts, ranges, and the numbers derivable from nll_nats and
    tokens agreeing with them, so a hand-edited perplexity cannot pass for a measured one."""
    from .evaluate.perplexity import LN2, exp_or_inf

    bad = (_bad_range(where, m, ("tokens", "oov", "sequences", "skipped_blank_lines", "bytes", "words"), 0,
                      integer=True)
           or _bad_range(where, m, ("unk_byte_share",), 0))
    if bad:
        return bad
    if "normalised" in m and not isinstance(m["normalised"], bool):
        return f"{where}.normalised = {m['normalised']!r} is not true or false"
    # Probabilities give nll >= 0 and perplexities >= 1; stupid backoff's scores are not probabilities.
    normalised = m.get("normalised", True)
    bad = (_bad_range(where, m, ("score_seconds", "tokens_per_second"), 0)
           or _bad_range(where, m, ("nll_nats", "cross_entropy_nats", "cross_entropy_bits", "bits_per_char"),
                         0 if normalised else -math.inf)
           or _bad_range(where, m, ("perplexity", "perplexity_excl_oov"), 1 if normalised else 0))
    if bad:
        return bad
    tokens, oov, nll = m.get("tokens"), m.get("oov"), m.get("nll_nats")
    if tokens is None:
        return None
    if oov is not None and oov > tokens:
        return f"{where}.oov = {oov} is more than its tokens ({tokens})"
    mean = nll / tokens if nll is not None and tokens else None  # None: no tokens, or an infinite NLL
    ppl = exp_or_inf(mean) if mean is not None else math.inf
    # key -> (its value from nll_nats and tokens, how it is derived); null where the value is not finite
    derived = {"cross_entropy_nats": (mean, "nll_nats / tokens"),
               "cross_entropy_bits": (None if mean is None else mean / LN2, "nll_nats / tokens / ln 2"),
               "perplexity": (ppl if math.isfinite(ppl) else None, "exp(nll_nats / tokens)")}
    n_bytes, words = m.get("bytes"), m.get("words")
    if nll is not None and n_bytes:
        derived["bits_per_byte"] = (nll / LN2 / n_bytes, "nll_nats / bytes / ln 2")
    if nll is not None and words:
        wppl = exp_or_inf(nll / words)
        derived["word_perplexity"] = (wppl if math.isfinite(wppl) else None, "exp(nll_nats / words)")
    if oov == 0:  # no OOV position to drop: excl. OOV is the same number
        derived["perplexity_excl_oov"] = (derived["perplexity"][0], "the perplexity when no token is OOV")
    elif oov == tokens:
        derived["perplexity_excl_oov"] = (None, "undefined when every token is OOV")
    for key, (want, how) in derived.items():
        have = m.get(key)
        if key in m and ((have is None) != (want is None) or (
                want is not None and not math.isclose(have, want, rel_tol=DERIVED_RTOL))):
            shown = "null" if want is None else f"{want:.12g}"
            return (f"{where}.{key} = {'null' if have is None else repr(have)}, but {how} = {shown} "
                    f"(nll_nats {nll!r}, tokens {tokens}): edited by hand?")
    excl = m.get("perplexity_excl_oov")
    if normalised and excl is not None and mean is not None and oov is not None and 0 < oov < tokens:
        # OOV positions add NLL >= 0, so dropping them cannot raise the NLL: a bound, not a value
        bound = exp_or_inf(nll / (tokens - oov))
        if excl > bound * (1 + OOV_BOUND_RTOL):
            return (f"{where}.perplexity_excl_oov = {excl!r} is above exp(nll_nats / (tokens - oov)) = "
                    f"{bound:.12g}, which it cannot exceed: edited by hand?")
    return None


def _bad_counts(split: str, m: dict, data: dict | None) -> str | None:
    """A split's metrics count the scored tokens of the file data.<split> records: the same numbers."""
    if not data:
        return None
    for key in ("tokens", "sequences"):
        if m.get(key) is not None and data.get(key) is not None and m[key] != data[key]:
            return f"metrics.{split}.{key} = {m[key]} but data.{split}.{key} = {data[key]}"
    return None


def versions() -> dict:
    out = {"lmkit": __version__, "python": platform.python_version()}
    import numpy

    out["numpy"] = numpy.__version__
    if "torch" in sys.modules:  # recorded only when a torch family ran; never imported for n-grams
        out["torch"] = sys.modules["torch"].__version__
    return out


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    if hasattr(obj, "item"):  # numpy scalars
        return to_jsonable(obj.item())
    return obj


def write_record(run_dir: Path, record: RunRecord) -> None:
    write_json(run_dir / RUN_FILE, to_jsonable(record.to_dict()))


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    with atomic_open(run_dir / METRICS_FILE) as fh:
        for row in rows:
            fh.write(json.dumps(to_jsonable({"schema": SCHEMA, **row}), allow_nan=False) + "\n")


def read_record(run_dir: str | Path) -> RunRecord:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelError(f"{run_dir}: no such run folder or model file")
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: not a run folder (and not an ARPA file)")
    path = run_dir / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{run_dir}: not a run folder (no {RUN_FILE})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path}: damaged run record (not valid JSON)") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read run record ({exc.strerror or exc})") from None
    return RunRecord.from_dict(data, str(path))


def run_folders(paths, log=None) -> list:
    """`paths` with each folder of run folders replaced by its runs (in name order): a lineup written by
    `lmkit compare`, a learning curve's folder, so `lmkit compare runs/*` reads them rather than failing on a
    folder without run.json. `log` gets one note per folder read this way. Anything else is kept as given."""
    out = []
    for p in paths:
        d = Path(p)
        inner = [] if not d.is_dir() or (d / RUN_FILE).exists() else sorted(
            c.name for c in d.iterdir() if not c.name.startswith(".") and (c / RUN_FILE).is_file())
        if inner and log is not None:
            log(f"note: {p} holds {len(inner)} run folder(s) (a lineup), read as runs: {', '.join(inner)}")
        out.extend([str(d / name) for name in inner] or [p])
    return out


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(model, record) for a run folder; every inconsistency is a one-line ModelError."""
    from .config import config_from_dict
    from .models import family

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record.status == "training":
        raise ModelError(f"{run_dir}: this run is still training or stopped without finishing (status "
                         f"'training'); continue it with: lmkit train --resume {run_dir}")
    vocab, protocol = run_vocab(run_dir, record)
    try:
        cls = family(record.kind)
    except UsageError:
        raise ModelError(f"{run_dir}: unknown model kind {record.kind!r} in run.json") from None
    try:
        config = config_from_dict(cls.Config, record.config)
    except (TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
    readers = {"read_record": read_record, "load_run": load_run} if getattr(cls, "needs_run_reader", False) else {}
    model = cls.load(run_dir, config, vocab, protocol, device=device, **readers)
    return model, record


def run_vocab(run_dir: str | Path, record: RunRecord):
    """(vocabulary, protocol) of a run folder, checked against its run.json, without loading the model."""
    from .data.vocab import Vocab

    vocab = Vocab.load(Path(run_dir) / VOCAB_FILE)
    if vocab.vocab_id != record.vocab_id:
        raise ModelError(f"{run_dir}: vocab.json (id {vocab.vocab_id}) is not the vocabulary this model "
                         f"was trained with (id {record.vocab_id})")
    try:
        protocol = Protocol.from_dict(record.protocol)
    except (TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
    check_vocab_matches(run_dir, vocab, protocol)
    return vocab, protocol


def check_vocab_matches(run_dir: str | Path, vocab, protocol: Protocol) -> None:
    """A word vocabulary under a char protocol (or lower-cased vs not) would score garbage: refuse it."""
    for name in ("level", "lowercase", "normalize"):
        have, want = getattr(vocab, name), getattr(protocol, name)
        if have != want:
            raise ModelError(f"{run_dir}: the vocabulary has {name}={have} but run.json's protocol says "
                             f"{name}={want}; the run folder was edited or assembled from different runs")
