"""Token files (issue 6, part 2): `lmkit encode` writes a corpus once as memory-mapped ids; train and score
stream from it with results identical to reading the text."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line

from lmkit import api
from lmkit.data.batching import stream_ids
from lmkit.data.corpus import LineReader, encode, file_sha256, read_text
from lmkit.data.tokenfile import TokenFile, encode_file, lookup
from lmkit.data.tokenize import tokenize
from lmkit.data.vocab import Vocab
from lmkit.errors import ModelError, UsageError
from lmkit.models.ngram.counts import flatten
from lmkit.models.ngram.external import stream_pieces
from lmkit.protocol import Protocol

# blank lines (whitespace only), CRLF, a BOM, a literal <s> and </s>, non-ASCII text, no final newline
TEXT = ("\ufeffthe cat sat on the mat\r\n\n  \nthe dog <s> sat\nA café </s> naïve\t cat\n"
        "\n" "the  the the\nlast line without newline")


def ok(*args, input=None):
    r = cli(*args, input=input)
    assert r.exit_code == 0, f"exit {r.exit_code}: {r.stderr}{r.stdout}"
    return r


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _vocab(text: str, level: str = "word", lowercase: bool = False) -> Vocab:
    p = Protocol(level=level, lowercase=lowercase)
    counts = Counter(t for line in text.lstrip("\ufeff").splitlines() for t in tokenize(line, p))
    del counts["cat"]  # one word out of the vocabulary: <unk> in the ids
    return Vocab.build(counts, level=level, lowercase=lowercase)


def _same_as_text(enc_file, enc_text) -> None:
    assert len(enc_file.sequences) == len(enc_text.sequences)
    for a, b in zip(enc_file.sequences, enc_text.sequences):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert list(enc_file.line_numbers) == list(enc_text.line_numbers)
    assert all(type(n) is int for n in enc_file.line_numbers)
    for field in ("sha256", "skipped_blank_lines", "reserved_tokens", "characters", "num_tokens"):
        assert getattr(enc_file, field) == getattr(enc_text, field), field


# -- round trip -------------------------------------------------------------------------------------
@pytest.mark.parametrize("level, keep_blank, lowercase", [("word", False, False), ("word", True, True),
                                                          ("char", False, False), ("char", True, False)])
def test_round_trip_equals_the_text_path(tmp_path, level, keep_blank, lowercase):
    f = _write(tmp_path / "t.txt", TEXT)
    vocab = _vocab(TEXT, level, lowercase)
    protocol = Protocol(level=level, lowercase=lowercase, keep_blank_lines=keep_blank)
    text_enc = encode(read_text(f), vocab, protocol)
    tf, reused = encode_file(f, vocab, protocol, block_bytes=7)  # many blocks: lines cross block reads
    assert not reused and tf.dtype == "uint16"
    _same_as_text(tf.encoded(), text_enc)
    assert tf.counts["reserved_tokens"] == (2 if level == "word" else 0)  # literal <s> and </s>
    assert tf.counts["skipped_blank_lines"] == (0 if keep_blank else 3)
    assert tf.counts["lines"] == 8
    if level == "char":
        assert tf.counts["characters"] == tf.counts["ids"] > 0


def test_uint32_for_vocabularies_over_65536_ids(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    vocab = Vocab.build(Counter({w: 1 for w in words}))
    assert len(vocab) > 1 << 16
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choices(words[-500:], k=5)) for _ in range(50)) + "\n"
    f = _write(tmp_path / "big-vocab.txt", text)
    tf, _ = encode_file(f, vocab, Protocol())
    assert tf.dtype == "uint32"
    assert (tf.path / "ids.bin").stat().st_size == 4 * 250
    assert max(int(s.max()) for s in tf.sequences) >= 1 << 16
    _same_as_text(tf.encoded(), encode(read_text(f), vocab, Protocol()))
    small = Vocab.build(Counter({w: 1 for w in words[:65_532]}))  # 65,536 ids with the reserved four
    assert len(small) == 1 << 16 and encode_file(f, small, Protocol())[0].dtype == "uint16"


def test_line_reader_blocks_read_as_read_text(tmp_path):
    f = _write(tmp_path / "t.txt", TEXT)
    whole = read_text(f)
    for block_bytes in (1, 3, 16, 1 << 20):
        reader = LineReader(f, block_bytes)
        assert [line for block in reader for line in block] == whole.lines
        assert reader.sha256 == whole.sha256 == file_sha256(f)


# -- lazy views ---------------------------------------------------------------------------------------
@pytest.fixture
def grammar(tmp_path) -> Path:
    rng = random.Random(3)
    words = "the a cat dog sees likes ball tree river moon today again".split()
    lines = [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(300)]
    lines[10] = lines[50] = ""  # blank lines are skipped: line numbers jump
    d = tmp_path / "grammar"
    d.mkdir()
    _write(d / "train.txt", "\n".join(lines) + "\n")
    _write(d / "valid.txt", "\n".join(lines[:40]) + "\n")
    _write(d / "test.txt", "\n".join(lines[40:90]) + "\n")
    return d


def test_views_index_slice_stream_shard_chunks(grammar):
    vocab = Vocab.build(Counter(read_text(grammar / "train.txt").lines[0].split()))  # small: many <unk>
    text_enc = encode(read_text(grammar / "train.txt"), vocab, Protocol())
    tf, _ = encode_file(grammar / "train.txt", vocab, Protocol())
    seqs, ref = tf.sequences, text_enc.sequences
    assert np.array_equal(seqs[-1], ref[-1]) and np.array_equal(seqs[np.int64(5)], ref[5])
    with pytest.raises(IndexError):
        seqs[len(ref)]
    part = seqs[20:60]
    assert len(part) == 40 and all(np.array_equal(a, b) for a, b in zip(part, ref[20:60]))
    assert all(np.array_equal(a, b) for a, b in zip(seqs[::7], ref[::7]))
    assert part[5:2].num_ids == 0 and len(part[5:2]) == 0
    assert tf.line_numbers[10] == text_enc.line_numbers[10] == 12  # after the blank line 11
    assert np.array_equal(tf.stream(), stream_ids(ref))
    assert np.array_equal(tf.stream(17, 123), stream_ids(ref[17:123]))
    for world in (1, 2, 3, 7):
        shards = [tf.shard(rank, world) for rank in range(world)]
        assert [s.start for s in shards] == [0] + [s.stop for s in shards[:-1]] and shards[-1].stop == len(ref)
        longest = max(len(s) + 1 for s in ref)
        sizes = [s.num_tokens for s in shards]
        assert sum(sizes) == text_enc.num_tokens and max(sizes) - min(sizes) <= longest
    chunks = list(tf.chunks(100))
    assert sum(len(c) for c in chunks) == len(ref) and all(c.num_tokens <= 100 for c in chunks)
    assert [c.start for c in chunks[1:]] == [c.stop for c in chunks[:-1]]
    assert [len(c) for c in tf.chunks(1)] == [1] * len(ref)  # a sequence longer than the bound: alone
    with pytest.raises(UsageError):
        tf.shard(2, 2)
    # the n-gram counters' fast paths: a view flattens from one read, and streams in pieces of its stretches
    for context in ("sentence", "stream"):
        for a, b in zip(flatten(part, context), flatten(list(part), context)):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    for size in (1, 7, 100, 10**6):
        got, want = list(stream_pieces(seqs, size)), list(stream_pieces(list(seqs), size))
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


# -- the cache ----------------------------------------------------------------------------------------
def test_cache_key_follows_file_vocab_and_protocol(tmp_path, grammar):
    f = grammar / "train.txt"
    vocab = Vocab.build(Counter(read_text(f).lines[0].split()))
    first, reused = encode_file(f, vocab, Protocol())
    ids = first.path / "ids.bin"
    stamp = (ids.stat().st_ino, ids.stat().st_mtime_ns)
    again, reused = encode_file(f, vocab, Protocol(context="stream"))  # context does not change the ids
    assert reused and again.path == first.path and (ids.stat().st_ino, ids.stat().st_mtime_ns) == stamp
    copy = _write(tmp_path / "copy.txt", f.read_text())  # the same content elsewhere: the same token file
    assert encode_file(copy, vocab, Protocol())[0].path == first.path
    other_vocab = Vocab.build(Counter(read_text(f).lines[1].split()))
    keys = {first.path,
            encode_file(f, other_vocab, Protocol())[0].path,
            encode_file(f, vocab, Protocol(keep_blank_lines=True))[0].path,
            encode_file(_write(tmp_path / "edited.txt", f.read_text() + "the cat\n"), vocab, Protocol())[0].path}
    assert len(keys) == 4
    assert lookup(f, vocab, Protocol()).path == first.path
    assert lookup(tmp_path / "edited.txt", other_vocab, Protocol()) is None


def _damage_truncate(folder: Path) -> None:
    ids = folder / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-2])


def _damage_meta(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["counts"]["skipped_blank_lines"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))


def _damage_version(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["schema"] = 99
    (folder / "meta.json").write_text(json.dumps(meta))


def _damage_ids(folder: Path) -> None:
    ids = folder / "ids.bin"
    data = bytearray(ids.read_bytes())
    data[0:2] = b"\xff\xff"  # id 65535: outside a small vocabulary, same size
    ids.write_bytes(bytes(data))


DAMAGE = {"truncated ids.bin": (_damage_truncate, "ids.bin is"),
          "edited meta.json": (_damage_meta, "meta.json was edited"),
          "format version": (_damage_version, "format version 99"),
          "ids out of range": (_damage_ids, "ids outside the vocabulary")}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_token_file_one_line_then_rebuilt_or_bypassed(tmp_path, grammar, case):
    """open(): a one-line ModelError. score/train and encode: one warning line, the token file is encoded
    again, results unchanged."""
    damage, match = DAMAGE[case]
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", grammar / "train.txt", "-o", vocab_path, "-q")
    run = tmp_path / "kn2"
    ok("train", "--model", "ngram:kn2", "--corpus", grammar, "--vocab", vocab_path, "-o", run, "-q")
    clean = json.loads(ok("score", run, grammar / "test.txt", "--format", "json").stdout)
    ok("encode", "--corpus", grammar, "--vocab", vocab_path, "--splits", "test", "-q")
    folder = lookup(grammar / "test.txt", Vocab.load(vocab_path), Protocol()).path
    damage(folder)
    with pytest.raises(ModelError, match=match) as err:
        TokenFile.open(folder)
    assert "\n" not in str(err.value)
    r = ok("score", run, grammar / "test.txt", "--format", "json")
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and match in warnings[0] and "encoding it again" in warnings[0], r.stderr
    assert json.loads(r.stdout) == clean
    TokenFile.open(folder)  # score rebuilt it
    damage(folder)
    r = ok("encode", "--corpus", grammar, "--vocab", vocab_path, "--splits", "test", "--format", "json")
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")] == \
        [ln for ln in r.stderr.splitlines() if match in ln and "encoding it again" in ln]
    assert json.loads(r.stdout)[0]["reused"] is False
    TokenFile.open(folder)  # sound again
    assert "reusing" in ok("score", run, grammar / "test.txt").stderr


def test_two_encoders_of_one_key_both_succeed(tmp_path, grammar):
    """Usually both encode (on the 2-core VM both report reused=false) and the second rename finds the
    folder taken; either way both succeed and one sound folder remains."""
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", grammar / "train.txt", "-o", vocab_path, "-q")
    big = _write(tmp_path / "train.txt", (grammar / "train.txt").read_text() * 300)
    code = ("import sys; from lmkit.cli import main; sys.argv = ['lmkit', 'encode', '--train', sys.argv[1], "
            "'--vocab', sys.argv[2], '-q', '--format', 'json']; main()")
    env = {**os.environ, "LMKIT_CACHE": os.environ["LMKIT_CACHE"]}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(big), str(vocab_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {json.loads(out)[0]["path"] for out, _ in outs}
    assert len(paths) == 1
    folder = Path(paths.pop())
    TokenFile.open(folder, Vocab.load(vocab_path))
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_encoding_memory_is_bounded_by_the_block_not_the_file(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=20)) for _ in range(500)]
    block = "\n".join(" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(2000)) + "\n"
    f = tmp_path / "big.txt"
    with open(f, "w") as fh:
        while fh.tell() < 3_000_000:
            fh.write(block)
    size = f.stat().st_size
    vocab = Vocab.build(Counter({w: 1 for w in words[:400]}))
    tracemalloc.start()
    try:
        tf, _ = encode_file(f, vocab, Protocol(), block_bytes=1 << 14)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tf.counts["lines"] == sum(1 for _ in open(f)) and tf.counts["ids"] > 100_000
    assert peak < 1_000_000 and peak < size / 3, (peak, size)


# -- train and score from token files ------------------------------------------------------------------
TIMING = {"score_seconds", "tokens_per_second"}


def _metrics(run: Path) -> dict:
    rec = json.loads((run / "run.json").read_text())
    return {split: {k: v for k, v in m.items() if k not in TIMING} for split, m in rec["metrics"].items()
            if isinstance(m, dict)}


def _train_pair(tmp_path, grammar, monkeypatch, args: list[str], name: str) -> tuple[Path, Path]:
    """The same run twice: from the text (an empty cache), then from token files."""
    vocab_path = tmp_path / "vocab.json"
    if not vocab_path.exists():
        ok("vocab", "build", grammar / "train.txt", "-o", vocab_path, "-q")
    text_run, token_run = tmp_path / f"{name}-text", tmp_path / f"{name}-tokens"
    r = ok("train", *args, "--corpus", grammar, "--vocab", vocab_path, "-o", text_run)
    assert "tokens:" not in r.stderr
    ok("encode", "--corpus", grammar, "--vocab", vocab_path, "-q")
    with monkeypatch.context() as patch:  # no line of text is read: the ids come from the token files
        patch.setattr(LineReader, "__iter__", _no_text_reading)
        r = ok("train", *args, "--corpus", grammar, "--vocab", vocab_path, "-o", token_run)
    assert r.stderr.count("tokens: reusing") == 3, r.stderr
    a, b = (json.loads((run / "run.json").read_text()) for run in (text_run, token_run))
    assert a["data"] == b["data"] and a["tokens_seen"] == b["tokens_seen"]
    assert _metrics(text_run) == _metrics(token_run)
    sa, sb = (np.load(run / "test_scores.npz", allow_pickle=False) for run in (text_run, token_run))
    for key in ("nll", "tokens", "oov"):
        assert np.array_equal(sa[key], sb[key]), key
    return text_run, token_run


def _no_text_reading(self):
    raise AssertionError(f"{self.name} was read as text")


@pytest.mark.parametrize("args", [["--model", "ngram:kn3"], ["--model", "ngram:wb2", "--context", "stream"]],
                         ids=["kn3-sentence", "wb2-stream"])
def test_ngram_from_token_files_equals_text(tmp_path, grammar, monkeypatch, args):
    text_run, token_run = _train_pair(tmp_path, grammar, monkeypatch, args, "ngram")
    per_line = [ok("score", run, grammar / "test.txt", "--per-line", "--format", "json") for run in
                (text_run, token_run)]
    assert "tokens: reusing" in per_line[0].stderr  # score finds the token file too
    assert json.loads(per_line[0].stdout) == json.loads(per_line[1].stdout)


NEURAL = {"lstm-stream": ["--model", "lstm", "--layers", "1", "--hidden", "16", "--context", "stream",
                          "--seq-len", "8", "--batch-size", "4"],
          "transformer": ["--model", "transformer", "--layers", "1", "--d-model", "16", "--heads", "2",
                          "--block-size", "8", "--batch-size", "8"]}


@pytest.mark.parametrize("name", list(NEURAL))
def test_neural_from_token_files_equals_text(tmp_path, grammar, monkeypatch, name):
    args = NEURAL[name] + ["--max-tokens", "600", "--set", "threads=1", "--seed", "1"]
    text_run, token_run = _train_pair(tmp_path, grammar, monkeypatch, args, name)
    scores = [json.loads(ok("score", run, grammar / "valid.txt", "--per-line", "--format", "json").stdout)
              for run in (text_run, token_run)]
    assert scores[0] == scores[1]
    if name == "transformer":  # --resume finds the token files too
        with monkeypatch.context() as patch:
            patch.setattr(LineReader, "__iter__", _no_text_reading)
            r = ok("train", "--resume", token_run, "--max-tokens", "900")
        assert r.stderr.count("tokens: reusing") == 3, r.stderr
        assert json.loads((token_run / "run.json").read_text())["tokens_seen"] >= 900


# -- the command ----------------------------------------------------------------------------------------
def test_encode_reports_each_split_and_reuse(tmp_path, grammar):
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", grammar / "train.txt", "-o", vocab_path, "-q")
    first = json.loads(ok("encode", "--corpus", grammar, "--vocab", vocab_path, "--format", "json").stdout)
    assert [r["split"] for r in first] == ["train", "valid", "test"] and not any(r["reused"] for r in first)
    enc = encode(read_text(grammar / "valid.txt"), Vocab.load(vocab_path), Protocol())
    valid = first[1]
    assert (valid["sequences"], valid["tokens"], valid["dtype"]) == (len(enc.sequences), enc.num_tokens, "uint16")
    assert valid["bytes"] == sum(p.stat().st_size for p in Path(valid["path"]).glob("*.bin"))
    r = ok("encode", "--valid", grammar / "valid.txt", "--vocab", vocab_path, "--format", "json")
    again = json.loads(r.stdout)
    assert again[0]["reused"] and again[0]["path"] == valid["path"] and "tokens: reusing" in r.stderr
    rows = api.encode_corpus(grammar, vocab_path, splits="train", keep_blank_lines=True)
    assert len(rows) == 1 and rows[0].path != Path(first[0]["path"])  # blank lines kept: another token file


def test_encode_refusals_are_one_line(tmp_path, grammar):
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", grammar / "train.txt", "-o", vocab_path, "-q")
    one_error_line(cli("encode", "--corpus", grammar), 2, "needs --vocab")
    pair = tmp_path / "pair"
    pair.mkdir()
    for split in ("train", "valid"):
        _write(pair / f"{split}.de", "ein haus\n")
        _write(pair / f"{split}.en", "a house\n")
    one_error_line(cli("encode", "--corpus", pair, "--vocab", vocab_path), 2, "parallel corpus")
    (grammar / "test.txt").unlink()
    one_error_line(cli("encode", "--corpus", grammar, "--vocab", vocab_path, "--splits", "train,test"), 1,
                   "no test split found")
    one_error_line(cli("encode", "--corpus", grammar, "--vocab", vocab_path, "--splits", "train,dev"), 2,
                   "--splits takes train, valid and/or test")
    one_error_line(cli("encode", "--train", "-", "--vocab", vocab_path, input="a b\n"), 2, "not stdin")
    one_error_line(cli("encode", "--train", tmp_path / "nope.txt", "--vocab", vocab_path), 1,
                   "nope.txt: file not found")
    one_error_line(cli("encode", "--corpus", grammar, "--vocab", tmp_path / "nope.json"), 1,
                   "vocabulary file not found")
