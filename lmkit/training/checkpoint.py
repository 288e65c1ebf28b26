"""Checkpoint folders: what a resume needs, written so that a kill at any moment leaves one complete copy.

A checkpoint is a folder (weights, trainer.pt, state.json written last) built as checkpoint.new and swapped
in whole: after a kill there is `checkpoint`, or, inside the swap, checkpoint.new (complete) or
checkpoint.old (the previous one); settle_checkpoint picks it up."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch

from ..artifacts import check_version, read_safetensors_header
from ..atomic import DiskFullError, is_disk_full, write_json
from ..errors import ModelError
from ..models.torchlm import WEIGHTS, load_weights, save_weights, unwrap
from .state import LoopState

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_SCHEMA = 1


def settle_checkpoint(run_dir: Path) -> Path:
    """The folder of the last complete checkpoint, finishing a swap that a kill interrupted."""
    ck = run_dir / CHECKPOINT_DIR
    if (ck / "state.json").exists():
        return ck
    for side in (run_dir / f"{CHECKPOINT_DIR}.new", run_dir / f"{CHECKPOINT_DIR}.old"):
        if (side / "state.json").exists():
            if ck.exists():
                shutil.rmtree(ck)
            side.replace(ck)
            return ck
    return ck


def has_checkpoint(run_dir: Path) -> bool:
    return (settle_checkpoint(run_dir) / "state.json").exists()


def _trainer_bytes(optimizer, scaler, rnn_state, rank_rng) -> io.BytesIO:
    """trainer.pt, built in memory (torch's own file errors do not say "disk full"): optimizer, RNGs, the
    gradient scaler and the recurrent state carried across a stream (the whole global batch)."""
    tensors = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
               "scaler": scaler.state_dict() if scaler is not None else {}}
    if rnn_state is not None:
        tensors["rnn_state"] = [t.detach().cpu() for t in (rnn_state if isinstance(rnn_state, tuple)
                                                             else (rnn_state,))]
    if torch.cuda.is_available():
        tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
    if rank_rng is not None:  # data-parallel: every rank's RNG, (world, n)
        tensors["rank_rng"] = rank_rng
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf


def save_checkpoint(run_dir: Path, net, optimizer, scaler, state: LoopState, rnn_state, rank_rng=None) -> None:
    """Write a complete checkpoint beside the current one, then swap it in."""
    settle_checkpoint(run_dir)
    ck, new, old = (run_dir / f"{CHECKPOINT_DIR}{s}" for s in ("", ".new", ".old"))
    shutil.rmtree(new, ignore_errors=True)
    buf = _trainer_bytes(optimizer, scaler, rnn_state, rank_rng)
    try:
        new.mkdir(parents=True)
        save_weights(unwrap(net), new / WEIGHTS)
        (new / "trainer.pt").write_bytes(buf.getbuffer())
        write_json(new / "state.json", {"schema": CHECKPOINT_SCHEMA, **state.to_json()})  # last: marks it complete
    except BaseException as exc:
        shutil.rmtree(new, ignore_errors=True)
        if is_disk_full(exc) or isinstance(exc, DiskFullError):
            raise DiskFullError(ck) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        ck.replace(old)
    new.replace(ck)
    shutil.rmtree(old, ignore_errors=True)


def read_state(ck: Path, run_dir: Path) -> LoopState:
    """state.json of checkpoint folder `ck`, refused when it is not what save_checkpoint writes."""
    path = ck / "state.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{run_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/state.json missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path}: damaged checkpoint state (not valid JSON)") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: damaged checkpoint state (not an object)")
    check_version(path, "checkpoint", raw.get("schema"), CHECKPOINT_SCHEMA)
    return LoopState.from_json(path, raw)


def read_trainer(path: Path, device: str, mmap: bool = False) -> dict:
    """trainer.pt through torch.load(weights_only=True): tensors and plain containers only. A file holding
    any other pickled object (which could run code) is refused, never executed."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the error says it all
            warnings.simplefilter("ignore")
            tensors = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint file is missing") from None
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise ModelError(f"{path}: refused: it holds pickled objects other than tensors, which could run "
                             "code when loaded (a damaged or tampered file); not loaded") from None
        raise ModelError(f"{path}: damaged checkpoint (UnpicklingError)") from None
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):  # not torch's zip format (a legacy pickle): read it the plain way
            return read_trainer(path, device, mmap=False)
        raise ModelError(f"{path}: damaged checkpoint (RuntimeError)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise ModelError(f"{path}: damaged checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(tensors, dict) or not isinstance(tensors.get("optimizer"), dict) or not isinstance(
            tensors.get("torch_rng"), torch.Tensor):
        raise ModelError(f"{path}: damaged checkpoint (no optimizer state or RNG state)")
    return tensors


def check_checkpoint(run_dir: Path) -> None:
    """Refuse a damaged, newer or unsafe checkpoint before a resume touches the run folder.

    Cheap: state.json, the weights' header, and trainer.pt memory-mapped (its pickle is still checked)."""
    ck = settle_checkpoint(run_dir)
    read_state(ck, run_dir)
    if not (ck / WEIGHTS).exists():
        raise ModelError(f"{ck / WEIGHTS}: weights file is missing")
    read_safetensors_header(ck / WEIGHTS)
    read_trainer(ck / "trainer.pt", "cpu", mmap=True)


def load_checkpoint(run_dir: Path, net, device: str) -> tuple[LoopState, dict]:
    """(state, tensors) of the last checkpoint, its weights loaded into `net`; ModelError when it is missing
    or damaged."""
    ck = settle_checkpoint(run_dir)
    state = read_state(ck, run_dir)
    load_weights(unwrap(net), ck / WEIGHTS)
    return state, read_trainer(ck / "trainer.pt", device)


def read_metrics(run_dir: Path, upto_step: int) -> list[dict]:
    """The validation rows of metrics.jsonl up to `upto_step` (a resume continues the curve from there)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a damaged line of the curve is dropped; the checkpoint holds what training needs
        if isinstance(row, dict) and isinstance(row.get("step", 0), int) and row.get("step", 0) <= upto_step:
            row.pop("schema", None)
            rows.append(row)
    return rows
