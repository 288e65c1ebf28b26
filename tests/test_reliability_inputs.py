"""Bad inputs (issue 7, part A): every text reader of the CLI meets empty, blank, binary, badly encoded,
BOM, CRLF, NUL, over-long, NFC/NFD, emoji, all-OOV and missing inputs. Refusals are ONE stderr line and
exit code 1 (data) or 2 (usage), never a traceback, and leave no output behind. docs/reliability.md
lists these cases under "Inputs"."""

from __future__ import annotations

import json
import os
import random
import unicodedata
from pathlib import Path

import pytest
from clitools import cli, one_error_line
from typer.main import get_command

from lmkit import api
from lmkit.cli import app
from lmkit.data import corpus
from lmkit.data.corpus import read_text
from lmkit.data.tokenize import detokenize, tokenize
from lmkit.data.vocab import Vocab
from lmkit.errors import DataError
from lmkit.protocol import Protocol


def ok(*args, input: bytes | str | None = None) -> str:
    r = cli(*args, input=input)
    assert r.exit_code == 0, f"exit {r.exit_code}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A word-level and a char-level KN3 run of a tiny corpus, and a copy of that corpus."""
    base = tmp_path_factory.mktemp("inputs")
    corpus = base / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\n")
    (corpus / "valid.txt").write_text("the dog sat on the mat\n")
    (corpus / "test.txt").write_text("the cat sat on the log\n")
    word = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=base / "kn3", progress=False))
    word2 = api.train(api.TrainRequest(model="ngram:kn2", corpus=corpus, output=base / "kn2", progress=False))
    return {"corpus": corpus, "word": word, "word2": word2}


def readers(runs: dict, f: Path | str, out: Path) -> dict[str, list]:
    """Every command that reads a user's text file, with `f` in that place; `out` must stay absent."""
    c = runs["corpus"]
    cmds = {
        "vocab build": ["vocab", "build", f, "-o", out / "v.json", "-q"],
        "vocab show --coverage": ["vocab", "show", runs["word"] / "vocab.json", "--coverage", f],
        "train --train": ["train", "--train", f, "--valid", c / "valid.txt", "-o", out, "-q"],
        "train --valid": ["train", "--train", c / "train.txt", "--valid", f, "-o", out, "-q"],
        "train --test": ["train", "--train", c / "train.txt", "--valid", c / "valid.txt", "--test", f, "-o", out,
                         "-q"],
        "score": ["score", runs["word"], f],
        "generate --prompt-file": ["generate", runs["word"], "--prompt-file", f],
        "bleu": ["bleu", runs["word"], f],
        "check": ["check", runs["word"], f, "-q"],
    }
    if "analyze" in get_command(app).commands:  # a newer command: covered when present
        cmds["analyze --text"] = ["analyze", runs["word"], runs["word2"], "--text", f, "-q"]
    return cmds


def refused_everywhere(runs: dict, tmp_path: Path, data: bytes, code: int, match: str, stdin: bool = False):
    f = tmp_path / "input.txt"
    f.write_bytes(data)
    out = tmp_path / "out"
    for name, args in readers(runs, "-" if stdin else f, out).items():
        r = cli(*args, input=data if stdin else None)
        try:
            one_error_line(r, code, match)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        assert not out.exists(), name
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], f"{name} left temp files"


def test_empty_file(runs, tmp_path):
    refused_everywhere(runs, tmp_path, b"", 1, "input.txt: file is empty")


def test_file_of_only_blank_lines(runs, tmp_path):
    refused_everywhere(runs, tmp_path, b"\n\n  \n\t\r\n\n", 1, "input.txt: file is empty")


def test_bom_and_blank_lines_only_is_empty(runs, tmp_path):
    refused_everywhere(runs, tmp_path, b"\xef\xbb\xbf\n \n", 1, "file is empty")


def test_binary_data(runs, tmp_path):
    data = bytes(random.Random(0).randrange(256) for _ in range(4096)) + b"\x00"
    refused_everywhere(runs, tmp_path, data, 1, "looks like a binary file")


def test_nul_bytes_in_text_are_binary(runs, tmp_path):
    refused_everywhere(runs, tmp_path, b"the cat\nsat \x00 on\n", 1, "contains NUL bytes")


def test_utf16_text_is_refused_as_binary(runs, tmp_path):
    refused_everywhere(runs, tmp_path, "the cat sat\n".encode("utf-16"), 1, "binary")


@pytest.mark.parametrize("data, line, byte", [
    (b"the cat\nthe \xff dog\n", 2, "0xff"),  # not UTF-8 at all
    ("ok\nline\ncaf\xe9\n".encode("latin-1"), 3, "0xe9"),  # Latin-1
    (b"a\n\nb\nthe \xed\xa0\x80 cat\n", 4, "0xed"),  # an encoded surrogate
    (b"the \xc0\xaf cat\n", 1, "0xc0"),  # an overlong encoding
    (b"the cat \xe2\x82", 1, "0xe2"),  # truncated at the end of the file
])
def test_invalid_utf8_names_file_and_line(runs, tmp_path, data, line, byte):
    refused_everywhere(runs, tmp_path, data, 1, f"input.txt: line {line}: invalid UTF-8 (byte {byte})")


@pytest.mark.parametrize("data", [b"", b"\n\n"])
def test_dash_with_nothing_on_stdin(runs, tmp_path, data):
    refused_everywhere(runs, tmp_path, data, 1, "<stdin>: file is empty", stdin=True)


def test_stdin_named_twice_is_a_usage_error(runs, tmp_path):
    one_error_line(cli("train", "--train", "-", "--valid", "-", "-o", tmp_path / "o", input="a b\n"), 2,
                   "--train and --valid both read stdin")
    one_error_line(cli("vocab", "build", "-", "-", input="a b\n"), 2, "more than once")
    assert not (tmp_path / "o").exists()


def test_missing_file_and_directory(runs, tmp_path):
    for args in readers(runs, tmp_path / "nope.txt", tmp_path / "out").values():
        one_error_line(cli(*args), 1, "nope.txt: file not found")
    for args in readers(runs, tmp_path, tmp_path / "out").values():
        one_error_line(cli(*args), 1, "is a directory")


def _score(run: Path, f: Path) -> dict:
    return json.loads(ok("score", run, f, "--format", "json"))


def test_bom_is_stripped(runs, tmp_path):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_bytes(b"the cat sat on the log\nthe bird\n")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = _score(runs["word"], plain), _score(runs["word"], bom)
    assert (a["tokens"], a["oov"], a["perplexity"]) == (b["tokens"], b["oov"], b["perplexity"])
    assert a["sha256"] == b["sha256"]  # the hash is of the text as read: the BOM is not content
    vocab = json.loads(ok("vocab", "build", bom))
    assert not any("\ufeff" in t for t in vocab["tokens"]) and "the" in vocab["tokens"]


def test_crlf_is_lf_and_a_lone_cr_is_whitespace(runs, tmp_path):
    lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
    lf.write_bytes(b"the cat sat\nthe dog\n")
    crlf.write_bytes(b"the cat sat\r\nthe dog\r\n")
    a, b = _score(runs["word"], lf), _score(runs["word"], crlf)
    assert (a["tokens"], a["oov"], a["sequences"], a["perplexity"]) == (b["tokens"], b["oov"], b["sequences"],
                                                                        b["perplexity"])
    assert a["tokens"] == 7 and a["oov"] == 0  # 5 words + 2 </s>: no "sat\r" token
    cr = tmp_path / "cr.txt"
    cr.write_bytes(b"the cat sat\rthe dog\r")  # old Mac endings: one line, CR splits words
    c = _score(runs["word"], cr)
    assert c["sequences"] == 1 and c["tokens"] == 6 and c["oov"] == 0


def _brute_force_long_line(data: bytes, limit: int) -> int | None:
    """First 1-based line longer than `limit` bytes (newline excluded), by a plain split."""
    for i, line in enumerate(data.split(b"\n"), start=1):
        if len(line) > limit:
            return i
    return None


def test_line_length_limit_matches_a_plain_split(tmp_path, monkeypatch):
    """Random line lengths around the limit, with the chunked reader's chunks smaller than the file."""
    rng = random.Random(7)
    f = tmp_path / "t.txt"
    for _ in range(150):
        limit = rng.choice([1, 2, 5, 16, 40])
        monkeypatch.setenv("LMKIT_MAX_LINE_BYTES", str(limit))
        lines = [b"x" * rng.choice([0, 1, limit - 1, limit, limit, limit + 1, 2 * limit + 3])
                 for _ in range(rng.randint(1, 12))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n"])
        if not data.strip():
            continue
        f.write_bytes(data)
        expected = _brute_force_long_line(data, limit)
        if expected is None:
            lines = data.decode().split("\n")
            assert read_text(f).lines == (lines[:-1] if lines[-1] == "" else lines)
        else:
            with pytest.raises(DataError, match=rf"t.txt: line {expected}: longer than {limit:,} bytes"):
                read_text(f)


def test_over_long_line_is_refused_with_file_and_line(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_MAX_LINE_BYTES", "100")
    data = b"the cat sat\n" + b"the " * 25 + b"\nthe dog\n"  # line 2: 100 bytes, accepted
    f = tmp_path / "ok.txt"
    f.write_bytes(data)
    assert _score(runs["word"], f)["sequences"] == 3
    bad = b"the cat sat\n\n" + b"cat " * 25 + b"x\nthe dog\n"  # line 3: 101 bytes
    refused_everywhere(runs, tmp_path, bad, 1, "input.txt: line 3: longer than 100 bytes")
    refused_everywhere(runs, tmp_path, bad, 1, "<stdin>: line 3: longer than 100 bytes", stdin=True)
    monkeypatch.setenv("LMKIT_MAX_LINE_BYTES", "lots")
    one_error_line(cli("score", runs["word"], f), 2, "LMKIT_MAX_LINE_BYTES must be a whole number")
    assert corpus.MAX_LINE_BYTES == 16 * 1024 * 1024  # the documented default


NFC = unicodedata.normalize("NFC", "café naïve résumé\nthe café\n")
NFD = unicodedata.normalize("NFD", NFC)


def test_nfc_and_nfd_differ_without_normalize_and_agree_with_it(tmp_path):
    assert NFC != NFD
    nfc, nfd = tmp_path / "nfc.txt", tmp_path / "nfd.txt"
    nfc.write_text(NFC, encoding="utf-8")
    nfd.write_text(NFD, encoding="utf-8")
    raw = tmp_path / "raw.json"
    ok("vocab", "build", nfc, "--min-count", "1", "-o", raw, "-q")  # every word: only code points differ
    cov = json.loads(ok("vocab", "show", raw, "--coverage", nfd, "--format", "json"))["coverage"]
    assert cov["oov_tokens"] == 4  # café x2, naïve, résumé are other code points in NFD
    normed = tmp_path / "nfc-norm.json"
    ok("vocab", "build", nfd, "--normalize", "NFC", "--min-count", "1", "-o", normed, "-q")
    cov = json.loads(ok("vocab", "show", normed, "--coverage", nfc, "--format", "json"))["coverage"]
    assert cov["oov_tokens"] == 0
    # the same through a trained model: under --normalize NFC the two files are the same text
    (tmp_path / "c").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "c" / f"{split}.txt").write_text(NFC, encoding="utf-8")
    plain = api.train(api.TrainRequest(model="ngram:kn2", corpus=tmp_path / "c", min_count=1,
                                       output=tmp_path / "plain", progress=False))
    norm = api.train(api.TrainRequest(model="ngram:kn2", corpus=tmp_path / "c", normalize="NFC", min_count=1,
                                      output=tmp_path / "norm", progress=False))
    assert _score(plain, nfd)["oov"] == 4 and _score(plain, nfc)["oov"] == 0
    a, b = _score(norm, nfc), _score(norm, nfd)
    assert a["oov"] == b["oov"] == 0 and a["perplexity"] == b["perplexity"]


EMOJI = "hi 👩\u200d👩\u200d👧 e\u0301 🏳️\u200d🌈 ok\nthe 👍🏽 cafe\u0301\n"


def test_char_level_units_are_code_points_and_round_trip(tmp_path):
    p = Protocol(level="char")
    family = "👩\u200d👩\u200d👧"
    assert tokenize(family, p) == ["👩", "\u200d", "👩", "\u200d", "👧"]  # one grapheme, five code points
    assert tokenize("e\u0301", p) == ["e", "\u0301"]  # a combining mark is its own unit
    d = tmp_path / "c"
    d.mkdir()
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text(EMOJI, encoding="utf-8")
    run = api.train(api.TrainRequest(model="ngram:kn3", corpus=d, level="char", min_count=1, output=tmp_path / "r",
                                     progress=False))
    vocab = Vocab.load(run / "vocab.json")
    for line in EMOJI.splitlines():
        ids, _ = vocab.encode(tokenize(line, p))
        assert detokenize(vocab.decode(ids), "char") == line  # text -> ids -> text is the identity
    s = _score(run, d / "test.txt")
    code_points = sum(len(line) for line in EMOJI.splitlines())
    assert s["oov"] == 0 and s["tokens"] == code_points + 2  # + one </s> per line
    out = json.loads(ok("generate", run, "-p", "hi 👩", "--max-tokens", "5", "--format", "json"))
    assert out[0]["text"].startswith("hi 👩")


def test_test_file_entirely_of_oovs(runs, tmp_path):
    f = tmp_path / "oov.txt"
    f.write_text("zebra yak gnu\nquokka\n")
    s = _score(runs["word"], f)
    assert s["oov"] == 4 and s["tokens"] == 6 and s["perplexity"] > 1  # OOVs are scored, as <unk>
    per_token = [json.loads(x) for x in ok("score", runs["word"], f, "--per-token", "-f", "jsonl").splitlines()]
    assert sum(t["oov"] for t in per_token) == 4
    assert ok("check", runs["word"], f, "-q")  # the checks run on it too
    one_error_line(cli("bleu", runs["word"], f), 1, "no line has at least 4 tokens")


def test_corpus_folder_missing_a_split(tmp_path):
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    (only_train / "train.txt").write_text("a b c\n")
    one_error_line(cli("train", "--corpus", only_train, "-o", tmp_path / "o1", "-q"), 1, "no valid split")
    one_error_line(cli("compare", "--corpus", only_train, "--models", "ngram:kn2", "-o", tmp_path / "o2", "-q"),
                   1, "no valid split")
    no_train = tmp_path / "no-train"
    no_train.mkdir()
    (no_train / "valid.txt").write_text("a b c\n")
    one_error_line(cli("train", "--corpus", no_train, "-o", tmp_path / "o3", "-q"), 1, "no train split")
    parallel = tmp_path / "pairs"
    parallel.mkdir()
    for name in ("train.de", "train.en", "valid.de"):
        (parallel / name).write_text("a b\n")
    one_error_line(cli("train", "--corpus", parallel, "--src", "de", "--tgt", "en", "-o", tmp_path / "o4", "-q"),
                   1, "valid.de has no partner file ending in .en")
    one_error_line(cli("train", "--corpus", tmp_path / "nowhere", "-o", tmp_path / "o5", "-q"), 1,
                   "corpus directory not found")
    for i in range(1, 6):
        assert not (tmp_path / f"o{i}").exists()
    no_test = tmp_path / "no-test"  # a missing test split is allowed: the run has no test metrics
    no_test.mkdir()
    (no_test / "train.txt").write_text("a b c\na b\n")
    (no_test / "valid.txt").write_text("a b\n")
    run = Path(ok("train", "--corpus", no_test, "-o", tmp_path / "o6", "-q").strip())
    assert "test" not in json.loads((run / "run.json").read_text())["metrics"]


def test_outputs_that_are_not_regular_files(runs, tmp_path):
    """-o naming a directory or a FIFO: refused before anything is written (an atomic rename over a
    special file would replace it; run as root over /dev/null that is a broken machine)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    text = runs["corpus"] / "train.txt"
    for target, match in ((fifo, "is not a regular file"), (folder, "is a directory")):
        one_error_line(cli("vocab", "build", text, "-o", target, "-q"), 2, match)
        one_error_line(cli("export-arpa", runs["word"], "-o", target, "-q"), 2, match)
        one_error_line(cli("plot", runs["word"], "-o", target, "-q"), 2, match)
    assert fifo.is_fifo() and folder.is_dir() and not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder"]
