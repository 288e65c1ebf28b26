"""Run folders: one directory per trained model, written atomically, read back by every command.

Layout: run.json (the record `compare` reads), vocab.json, the family's weights, metrics.jsonl, and
test_scores.npz (per-sequence test scores for `compare --bootstrap`; evaluate/per_sequence.py).
A run is loaded only when run.json, the vocabulary and the weights agree with each other."""

from __future__ import annotations

import json
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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if integer else value == value


def _bad_field(rec: "RunRecord") -> str | None:
    """The first field of a record whose type or value cannot have been written by lmkit, described."""
    for name, kind in _FIELD_TYPES.items():
        value = getattr(rec, name)
        if not isinstance(value, kind):
            return f"{name} is {type(value).__name__}, expected {kind.__name__}"
    if rec.status not in STATUSES:
        return f"status {rec.status!r} is not one of {', '.join(STATUSES)}"
    for name, integer in (("parameters", True), ("tokens_seen", True), ("train_seconds", False)):
        if not _number(getattr(rec, name), integer) or getattr(rec, name) < 0:
            return f"{name} = {getattr(rec, name)!r}"
    if rec.seed is not None and not _number(rec.seed, True):
        return f"seed = {rec.seed!r}"
    for group in ("data", "metrics"):
        for split, entry in getattr(rec, group).items():
            if entry is not None and not isinstance(entry, dict):
                return f"{group}.{split} is {type(entry).__name__}, expected an object"
    for split, entry in rec.data.items():
        if isinstance(entry, dict) and not isinstance(entry.get("sha256"), (str, type(None))):
            return f"data.{split}.sha256 is not a string"
    for split, entry in rec.metrics.items():
        if split == "bleu" or not isinstance(entry, dict):
            continue
        for key in ("perplexity", "perplexity_excl_oov", "nll_nats", "cross_entropy_bits"):
            if entry.get(key) is not None and not _number(entry[key]):
                return f"metrics.{split}.{key} = {entry[key]!r}"
        for key in ("tokens", "oov"):
            if entry.get(key) is not None and not _number(entry[key], True):
                return f"metrics.{split}.{key} = {entry[key]!r}"
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


def check_output_dir(path: Path, force: bool) -> None:
    """-o DIR must not silently overwrite a non-empty folder."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not force:
        raise UsageError(f"{path}: folder exists and is not empty (use --force to replace it)")


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


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(model, record) for a run folder; every inconsistency is a one-line ModelError."""
    from .config import config_from_dict
    from .data.vocab import Vocab
    from .models import family

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record.status == "training":
        raise ModelError(f"{run_dir}: this run is still training or stopped without finishing (status "
                         f"'training'); continue it with: lmkit train --resume {run_dir}")
    vocab = Vocab.load(run_dir / VOCAB_FILE)
    if vocab.vocab_id != record.vocab_id:
        raise ModelError(f"{run_dir}: vocab.json (id {vocab.vocab_id}) is not the vocabulary this model "
                         f"was trained with (id {record.vocab_id})")
    try:
        cls = family(record.kind)
    except UsageError:
        raise ModelError(f"{run_dir}: unknown model kind {record.kind!r} in run.json") from None
    try:
        config = config_from_dict(cls.Config, record.config)
        protocol = Protocol.from_dict(record.protocol)
    except (TypeError, ValueError, UsageError) as exc:
        raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
    check_vocab_matches(run_dir, vocab, protocol)
    model = cls.load(run_dir, config, vocab, protocol, device=device)
    return model, record


def check_vocab_matches(run_dir: str | Path, vocab, protocol: Protocol) -> None:
    """A word vocabulary under a char protocol (or lower-cased vs not) would score garbage: refuse it."""
    for name in ("level", "lowercase", "normalize"):
        have, want = getattr(vocab, name), getattr(protocol, name)
        if have != want:
            raise ModelError(f"{run_dir}: the vocabulary has {name}={have} but run.json's protocol says "
                             f"{name}={want}; the run folder was edited or assembled from different runs")
