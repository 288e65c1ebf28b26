"""Damaged artifacts (issue 7, part B): every file of a run folder, ARPA files and checkpoints, truncated,
hand-edited, from a newer lmkit, missing, or carrying a pickle payload -- each refused with ONE line on
stderr and exit code 1, never a traceback, never code run. docs/reliability.md lists these cases."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmkit import __version__, api
from lmkit.cli import app

HERE = Path(__file__).resolve().parent
LINES = ["the cat sees the ball today", "a bird likes the moon", "my friend finds a tree at night",
         "the dog chases the river", "a child hears some bread again", "the old man sees the moon"]


def _corpus(d: Path) -> Path:
    d.mkdir()
    rng = np.random.default_rng(3)
    for split, n in (("train", 300), ("valid", 40), ("test", 40)):
        picked = [LINES[i] for i in rng.integers(0, len(LINES), n)]
        (d / f"{split}.txt").write_text("\n".join(picked) + "\n")
    return d


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    """One n-gram run, one tiny MLP run (with checkpoint), a char-level run and an ARPA export."""
    base = tmp_path_factory.mktemp("pristine")
    corpus = _corpus(base / "corpus")
    ngram = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=base / "kn3", progress=False))
    char = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, level="char", output=base / "char",
                                      progress=False))
    mlp = api.train(api.TrainRequest(model="mlp", corpus=corpus, output=base / "mlp", progress=False,
                                     options={"window": 2, "embed": 8, "hidden": 16},
                                     train_options={"epochs": 1, "eval_every": 3, "device": "cpu",
                                                    "threads": 1, "batch_size": 32}))
    arpa = api.export_arpa(ngram, base / "kn3.arpa")
    return {"corpus": corpus, "ngram": ngram, "char": char, "mlp": mlp, "arpa": arpa}


def copy(pristine: dict, name: str, tmp_path: Path) -> Path:
    src = pristine[name]
    dst = tmp_path / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    # a crash inside the CLI shows up as a non-SystemExit exception: never acceptable here
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.stderr


def refused(*args, match: str | tuple[str, ...], code: int = 1) -> str:
    """The command fails with exit `code` and exactly one stderr line, `error: ...`, containing `match`."""
    exit_code, err = cli(*args)
    assert exit_code == code, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for m in (match,) if isinstance(match, str) else match:
        assert m in err, err
    return err


def score(run: Path, pristine: dict, **kw) -> str:
    return refused("score", run, pristine["corpus"] / "test.txt", **kw)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(data))


CUTS = (0, 1, 7, 0.3, 0.6, -2)  # byte counts, or fractions of the file


def cut(path: Path, at) -> None:
    raw = path.read_bytes()
    n = int(len(raw) * at) if isinstance(at, float) else (at if at >= 0 else len(raw) + at)
    path.write_bytes(raw[:n])


class Payload:
    """A pickle that would create `marker` when unpickled: proof that a loader ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class OpenPayload(Payload):
    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- run.json ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("at", CUTS)
def test_run_json_truncated(pristine, tmp_path, at):
    run = copy(pristine, "ngram", tmp_path)
    cut(run / "run.json", at)
    score(run, pristine, match="damaged run record")
    refused("compare", run, match="damaged run record")


@pytest.mark.parametrize("change, match", [
    ({"metrics": "lots"}, "metrics is str"),
    ({"status": "finished"}, "status 'finished'"),
    ({"parameters": "many"}, "parameters = 'many'"),
    ({"data__test": [1, 2]}, "data.test is list"),
    ({"metrics__test__perplexity": "low"}, "metrics.test.perplexity"),
    ({"protocol__level": "klingon"}, "invalid protocol"),
    ({"kind": "markov"}, "unknown model kind 'markov'"),
    ({"config__order": "three"}, "invalid configuration"),
    ({"config__order": 4}, "the run config says kn4"),
    ({"vocab_id": "0123456789abcdef"}, "is not the vocabulary this model was trained with"),
    ({"config": None}, "damaged"),
])
def test_run_json_hand_edited(pristine, tmp_path, change, match):
    run = copy(pristine, "ngram", tmp_path)
    edit_json(run / "run.json", **change)
    score(run, pristine, match=match)


def test_run_json_invalid_json_and_not_an_object(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    path = run / "run.json"
    path.write_text(path.read_text().replace('"kind"', "kind", 1))
    score(run, pristine, match="not valid JSON")
    path.write_text("[1, 2, 3]")
    score(run, pristine, match="not an lmkit run record")
    path.write_bytes(b"\xff\xfe\x00garbage")
    score(run, pristine, match="not valid JSON")


@pytest.mark.parametrize("version, match", [
    (2, ("run record format version 2", f"lmkit {__version__} reads version 1", "newer lmkit")),
    (99, ("version 99",)),
    ("1", ("unknown format version ('1')",)),
    (None, ("unknown format version (none)",)),
])
def test_run_json_other_version(pristine, tmp_path, version, match):
    run = copy(pristine, "ngram", tmp_path)
    edit_json(run / "run.json", schema=version)
    score(run, pristine, match=match)
    refused("compare", run, match=match)


@pytest.mark.parametrize("name, match", [
    ("run.json", "not a run folder (no run.json)"),
    ("vocab.json", "vocabulary file not found"),
    ("model.npz", "model file not found"),
])
def test_ngram_run_missing_file(pristine, tmp_path, name, match):
    run = copy(pristine, "ngram", tmp_path)
    (run / name).unlink()
    score(run, pristine, match=match)


# -- vocab.json -------------------------------------------------------------------------------------
@pytest.mark.parametrize("at", CUTS)
def test_vocab_truncated(pristine, tmp_path, at):
    run = copy(pristine, "ngram", tmp_path)
    cut(run / "vocab.json", at)
    score(run, pristine, match="not a readable vocabulary file")
    refused("vocab", "show", run / "vocab.json", match="not a readable vocabulary file")


def test_vocab_hand_edited(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    path = run / "vocab.json"
    original = path.read_text()
    data = json.loads(original)
    data["tokens"][5] = data["tokens"][5] + "x"  # a token renamed, hash left alone
    path.write_text(json.dumps(data))
    score(run, pristine, match="does not match its vocab_id")
    for change, match in (({"tokens": "abc"}, "tokens must be a list of strings"),
                          ({"tokens": [1, 2, 3]}, "tokens must be a list of strings"),
                          ({"counts": ["x"]}, "incomplete or edited"),
                          ({"counts": [1, 2]}, "tokens and counts differ"),
                          ({"kind": "vocab"}, "not an lmkit vocabulary file"),
                          ({"level": "bytes"}, "level 'bytes'"),
                          ({"min_count": None}, "incomplete or edited")):
        path.write_text(original)
        edit_json(path, **change)
        score(run, pristine, match=match)
    data = json.loads(original)
    data["tokens"][:4] = ["<unk>", "<pad>", "<s>", "</s>"]  # reserved ids swapped
    path.write_text(json.dumps(data))
    score(run, pristine, match=(str(path), "reserved tokens"))


def test_vocab_other_version(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    edit_json(run / "vocab.json", schema=3)
    score(run, pristine, match=("vocabulary format version 3", f"lmkit {__version__} reads version 1"))
    refused("train", "--model", "ngram:kn2", "--corpus", pristine["corpus"], "--vocab", run / "vocab.json",
            "-o", tmp_path / "new", match="vocabulary format version 3")
    assert not (tmp_path / "new").exists()


# -- a vocabulary or model from another level or protocol ------------------------------------------
def test_vocab_of_another_level_in_a_run_folder(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    shutil.copy(pristine["char"] / "vocab.json", run / "vocab.json")  # a char vocabulary in a word run
    score(run, pristine, match="is not the vocabulary this model was trained with")


def test_protocol_edited_to_another_level(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    edit_json(run / "run.json", protocol__level="char")  # word vocabulary, run.json now claims char
    score(run, pristine, match="the vocabulary has level=word but run.json's protocol says level=char")
    run2 = copy(pristine, "mlp", tmp_path)
    edit_json(run2 / "run.json", protocol__lowercase=True)
    refused("train", "--resume", run2, match="lowercase=False but run.json's protocol says lowercase=True")


def test_runs_of_different_levels_meet_on_bits_per_byte_only(pristine, tmp_path):
    code, _ = cli("compare", pristine["ngram"], pristine["char"])
    assert code == 0
    other = copy(pristine, "char", tmp_path)
    record = json.loads((other / "run.json").read_text())
    record["data"]["test"]["sha256"] = "ab" * 32
    (other / "run.json").write_text(json.dumps(record))
    refused("compare", pristine["ngram"], other, match=("not measured the same way", "test file differs",
                                                         "bits per byte"))


def test_vocab_of_another_level_for_training(pristine, tmp_path):
    refused("train", "--model", "ngram:kn2", "--corpus", pristine["corpus"], "--vocab",
            pristine["char"] / "vocab.json", "--level", "word", "-o", tmp_path / "x",
            match="--vocab was built with level=char", code=2)


def test_per_sequence_scores_of_another_run(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    shutil.copy(pristine["char"] / "test_scores.npz", run / "test_scores.npz")  # char-level scores
    code, _ = cli("compare", run, "--bootstrap", "20")
    assert code == 0
    rows = _bootstrap_rows(run)
    assert rows[0]["test_ppl_lo"] is None and "per-sequence scores unusable" in rows[0]["note"]


# -- model.npz (n-gram tables) ----------------------------------------------------------------------
@pytest.mark.parametrize("at", CUTS)
def test_ngram_model_truncated(pristine, tmp_path, at):
    run = copy(pristine, "ngram", tmp_path)
    cut(run / "model.npz", at)
    score(run, pristine, match="damaged or incompatible n-gram model file")


@pytest.mark.parametrize("member", ["keys_2", "logp_3", "logbo_1"])
def test_ngram_model_with_one_changed_byte(pristine, tmp_path, member):
    """A flipped bit inside a table (a bad disk, a bad copy) fails the member's CRC: refused in one line, never
    scored. The tables are memory-mapped after this one checked read (lmkit/npzmap.py)."""
    run = copy(pristine, "ngram", tmp_path)
    path = run / "model.npz"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{member}.npy")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len + info.file_size - 3] ^= 0x10  # inside the values
    path.write_bytes(bytes(raw))
    score(run, pristine, match=(f"member {member} fails its CRC check", "damaged or incompatible n-gram model file"))


def _rewrite_npz(path: Path, replace: dict[str, bytes]) -> None:
    """Rebuild an .npz with some members replaced by raw .npy bytes."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.update(replace)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def test_ngram_model_hand_edited_and_other_version(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    path = run / "model.npz"
    meta = _meta(path)
    _rewrite_npz(path, {"meta.npy": _npy(np.array(json.dumps({**meta, "version": 2})))})
    score(run, pristine, match=("n-gram model format version 2", f"lmkit {__version__} reads version 1"))
    _rewrite_npz(path, {"meta.npy": _npy(np.array(json.dumps({**meta, "format": "other"})))})
    score(run, pristine, match="not an lmkit n-gram model")
    _rewrite_npz(path, {"meta.npy": _npy(np.array("{not json"))})
    score(run, pristine, match="damaged or incompatible")
    _rewrite_npz(path, {"meta.npy": _npy(np.array(json.dumps(meta))), "logp_2.npy": _npy(np.zeros(3))})
    score(run, pristine, match="logp_2 has the wrong shape")


def test_ngram_model_array_claiming_an_absurd_size(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 40,)})
    _rewrite_npz(run / "model.npz", {"logp_1.npy": buf.getvalue() + b"\0" * 64})
    score(run, pristine, match="claims 8,796,093,022,208 bytes")


def test_ngram_model_pickle_payload_is_refused(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    marker = tmp_path / "PWNED"
    _rewrite_npz(run / "model.npz", {"meta.npy": _npy(np.array([Payload(marker)], dtype=object))})
    score(run, pristine, match="refused: it holds pickled objects")
    _rewrite_npz(run / "model.npz", {"keys_2.npy": _npy(np.array([OpenPayload(marker)], dtype=object))})
    score(run, pristine, match="refused: it holds pickled objects")
    import pickle

    (run / "model.npz").write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle under the model's name
    score(run, pristine, match="not unpickled")
    assert not marker.exists()


# -- test_scores.npz (compare --bootstrap) ----------------------------------------------------------
def _bootstrap_rows(*runs) -> list[dict]:
    r = CliRunner().invoke(app, ["compare", *map(str, runs), "--bootstrap", "20", "--format", "json"])
    assert r.exit_code == 0 and r.exception is None, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("at", CUTS)
def test_test_scores_truncated(pristine, tmp_path, at):
    run = copy(pristine, "ngram", tmp_path)
    cut(run / "test_scores.npz", at)
    (row,) = _bootstrap_rows(run)
    assert row["test_ppl_lo"] is None and "test_scores.npz" in row["note"] and "damaged" in row["note"]


def test_test_scores_edited_other_version_pickle_missing(pristine, tmp_path):
    run = copy(pristine, "ngram", tmp_path)
    path = run / "test_scores.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, **{**arrays, "nll": arrays["nll"] * 1.01})  # hand-edited numbers
    assert "adds up to a test NLL" in _bootstrap_rows(run)[0]["note"]
    np.savez(path, **{**arrays, "schema": np.int64(2)})
    note = _bootstrap_rows(run)[0]["note"]
    assert "per-sequence scores format version 2" in note and f"lmkit {__version__} reads version 1" in note
    marker = tmp_path / "PWNED"
    np.savez(path, **{**arrays, "nll": np.array([Payload(marker)], dtype=object)}, allow_pickle=True)
    assert "refused: it holds pickled objects" in _bootstrap_rows(run)[0]["note"]
    assert not marker.exists()
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 40,)})
    np.savez(path, **arrays)
    _rewrite_npz(path, {"nll.npy": buf.getvalue()})
    assert "claims 8,796,093,022,208 bytes" in _bootstrap_rows(run)[0]["note"]
    path.unlink()
    assert "no per-sequence scores" in _bootstrap_rows(run)[0]["note"]


# -- metrics.jsonl (plot, resume) -------------------------------------------------------------------
def test_metrics_jsonl_damaged(pristine, tmp_path):
    pytest.importorskip("matplotlib")
    run = copy(pristine, "mlp", tmp_path)
    path = run / "metrics.jsonl"
    original = path.read_text()
    for at in (0.5, -3):
        path.write_text(original)
        cut(path, at)
        refused("plot", run, "-o", tmp_path / "c.png", match="damaged line (not valid JSON)")
    path.write_text(original.replace('"schema": 1', '"schema": 7', 1))
    refused("plot", run, "-o", tmp_path / "c.png", match=("learning-curve row format version 7",
                                                          f"lmkit {__version__}"))
    path.unlink()
    refused("plot", run, "-o", tmp_path / "c.png", match="no metrics.jsonl")
    assert not (tmp_path / "c.png").exists()


# -- ARPA files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("at", (0, 5, 0.3, 0.7, -8))
def test_arpa_truncated(pristine, tmp_path, at):
    path = copy(pristine, "arpa", tmp_path)
    cut(path, at)
    score(path, pristine, match=str(path))


def _rename_last_word(line: str, word: str) -> str:
    prob, words, *rest = line.split("\t")
    return "\t".join([prob, " ".join(words.split()[:-1] + [word]), *rest])


def test_arpa_hand_edited(pristine, tmp_path):
    path = copy(pristine, "arpa", tmp_path)
    original = path.read_text()
    lines = original.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("\\1-grams:")) + 2
    second = next(i for i, ln in enumerate(lines) if ln.startswith("\\2-grams:")) + 1
    cases = [
        (original.replace("ngram 2=", "ngram 2=1", 1), "section has"),
        ("\n".join(lines[:first] + ["abc\t" + lines[first].split("\t", 1)[1]] + lines[first + 1:]),
         "'abc' is not a number"),
        ("\n".join(lines[:first] + [lines[first] + "\textra\tfields"] + lines[first + 1:]), "fields"),
        ("\n".join(lines[:first] + [lines[first - 1]] + lines[first:]), "section has"),
        (original.replace("\\end\\", ""), "truncated"),
        ("\n".join(lines[:second] + [_rename_last_word(lines[second], "zzz")] + lines[second + 1:]),
         "'zzz' is not among the unigrams"),
        ("\\data\\\nngram 1=x\n" + original, "expected 'ngram N=count'"),
    ]
    for text, match in cases:
        path.write_text(text)
        score(path, pristine, match=(str(path), match))
    gz = tmp_path / "m.arpa.gz"
    import gzip

    gz.write_bytes(gzip.compress(original.encode())[:200])
    score(gz, pristine, match="cannot read ARPA file")
    path.write_bytes(b"\\data\\\n\xff\xfe\n")
    score(path, pristine, match="invalid UTF-8")


# -- model.safetensors (torch weights) --------------------------------------------------------------
def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_header(path: Path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize("at", CUTS)
def test_weights_truncated(pristine, tmp_path, at):
    run = copy(pristine, "mlp", tmp_path)
    cut(run / "model.safetensors", at)
    score(run, pristine, match="damaged or truncated weights file")


def test_weights_header_claiming_an_absurd_size(pristine, tmp_path):
    run = copy(pristine, "mlp", tmp_path)
    path = run / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2 ** 60) + raw[8:])
    score(run, pristine, match="header claims 1,152,921,504,606,846,976 bytes")
    header, data = _header(Path(pristine["mlp"]) / "model.safetensors")
    name = next(k for k in header if k != "__metadata__")
    start = header[name]["data_offsets"][0]
    _write_header(path, {**header, name: {**header[name], "data_offsets": [start, start + 2 ** 40]}}, data)
    score(run, pristine, match=f"tensor {name!r} claims bytes")
    _write_header(path, {**header, name: {**header[name], "shape": [2 ** 31, 2 ** 31]}}, data)
    score(run, pristine, match=f"tensor {name!r} claims bytes")


def test_weights_hand_edited_and_other_version(pristine, tmp_path):
    run = copy(pristine, "mlp", tmp_path)
    path = run / "model.safetensors"
    header, data = _header(path)
    _write_header(path, {**header, "__metadata__": {**header["__metadata__"], "version": "2"}}, data)
    score(run, pristine, match=("weights format version 2", f"lmkit {__version__} reads version 1"))
    _write_header(path, {**header, "__metadata__": {**header["__metadata__"], "format": "pt"}}, data)
    score(run, pristine, match="not an lmkit weights file")
    name = next(k for k in header if k != "__metadata__")
    _write_header(path, {**header, name: {**header[name], "dtype": "Q9"}}, data)
    score(run, pristine, match="has no valid dtype")
    path.write_bytes(path.read_bytes()[:8] + b"{not json" + b" " * 100)
    score(run, pristine, match="damaged")


def test_weights_of_another_model(pristine, tmp_path):
    run = copy(pristine, "mlp", tmp_path)
    edit_json(run / "run.json", config__hidden=32)  # the stored tensors are for hidden=16
    score(run, pristine, match="weights do not match the model in run.json")


def test_neural_run_missing_files(pristine, tmp_path):
    run = copy(pristine, "mlp", tmp_path)
    (run / "model.safetensors").unlink()
    score(run, pristine, match="weights file is missing")
    run = copy(pristine, "mlp", tmp_path / "b")
    (run / "vocab.json").unlink()
    refused("train", "--resume", run, match="vocabulary file not found")


# -- checkpoints (train --resume) -------------------------------------------------------------------
def test_checkpoint_pickle_payload_is_refused_never_run(pristine, tmp_path):
    import pickle

    import torch

    run = copy(pristine, "mlp", tmp_path)
    trainer = run / "checkpoint" / "trainer.pt"
    marker = tmp_path / "PWNED"
    trainer.write_bytes(pickle.dumps({"optimizer": Payload(marker)}))  # legacy pickle format
    refused("train", "--resume", run, match=("trainer.pt: refused", "could run code"))
    torch.save({"optimizer": {}, "torch_rng": torch.get_rng_state(), "x": OpenPayload(marker)}, trainer)  # zip format
    refused("train", "--resume", run, match="trainer.pt: refused")
    assert not marker.exists()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"  # nothing was touched


@pytest.mark.parametrize("at", (0, 10, 0.5, -10))
def test_checkpoint_truncated(pristine, tmp_path, at):
    run = copy(pristine, "mlp", tmp_path)
    cut(run / "checkpoint" / "trainer.pt", at)
    refused("train", "--resume", run, match="damaged checkpoint")
    run2 = copy(pristine, "mlp", tmp_path / "b")
    cut(run2 / "checkpoint" / "state.json", at)
    refused("train", "--resume", run2, match="damaged checkpoint state")


@pytest.mark.parametrize("change, match", [
    ({"step": "ten"}, "step = 'ten'"),
    ({"epoch": -1}, "epoch = -1"),
    ({"best_valid_ppl": "low"}, "best_valid_ppl"),
    ({"train_seconds": None}, "train_seconds = None"),
    ({"schema": 2}, ("checkpoint format version 2", f"lmkit {__version__} reads version 1")),
])
def test_checkpoint_state_hand_edited(pristine, tmp_path, change, match):
    run = copy(pristine, "mlp", tmp_path)
    edit_json(run / "checkpoint" / "state.json", **change)
    refused("train", "--resume", run, match=match)


def test_checkpoint_missing_parts(pristine, tmp_path):
    run = copy(pristine, "mlp", tmp_path)
    (run / "checkpoint" / "trainer.pt").unlink()
    refused("train", "--resume", run, match="trainer.pt: checkpoint file is missing")
    run = copy(pristine, "mlp", tmp_path / "b")
    (run / "checkpoint" / "model.safetensors").unlink()
    refused("train", "--resume", run, match="weights file is missing")


def test_checkpoint_of_another_model(pristine, tmp_path):
    import torch

    run = copy(pristine, "mlp", tmp_path)
    trainer = run / "checkpoint" / "trainer.pt"
    state = torch.load(trainer, weights_only=True)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]
    torch.save(state, trainer)
    refused("train", "--resume", run, "-q", match="checkpoint does not match this model")
    assert json.loads((run / "run.json").read_text())["status"] == "complete"  # the record is left as it was


def test_resume_of_an_ngram_run_and_of_nothing(pristine, tmp_path):
    refused("train", "--resume", pristine["ngram"], match="only neural runs can be resumed", code=2)
    refused("train", "--resume", tmp_path / "nothing", match="no such run folder")
    assert not list(tmp_path.iterdir())  # no lock file or folder left behind
