"""One set of defaults (lmkit.defaults) for every command: train, compare, curve, vocab build and encode show the
same level, min-count and context in --help and use them, so a run trained with `lmkit train` and no options
stands beside a lineup's runs; `train` names them in its run summary on stderr."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from clitools import cli, one_error_line

from lmkit import defaults
from lmkit.cli import app
from lmkit.protocol import Protocol

# words seen once (ant, bee, cow, elk) and twice or more: min-count 2 and 1 give different vocabularies
TRAIN = "the cat sat on the mat\nthe dog sat on the mat\nthe cat saw the dog\nan ant a bee\na cow an elk\n"
VALID = "the dog sat on the cat\n"
TEST = "the cat sat on the dog\nthe bee sat\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    d.mkdir()
    for name, text in (("train.txt", TRAIN), ("valid.txt", VALID), ("test.txt", TEST)):
        (d / name).write_text(text)
    return d


def params(*path: str) -> dict:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {p.name: p for p in cmd.params}


def run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_every_command_declares_the_shared_defaults():
    train, curve, vocab, encode = params("train"), params("curve"), params("vocab", "build"), params("encode")
    assert (train["level"].default, train["min_count"].default, train["context"].default) == (
        defaults.LEVEL, defaults.MIN_COUNT, defaults.CONTEXT)
    assert (curve["level"].default, curve["min_count"].default, curve["context"].default) == (
        defaults.LEVEL, defaults.MIN_COUNT, defaults.CONTEXT)
    assert (vocab["level"].default, vocab["min_count"].default) == (defaults.LEVEL, defaults.MIN_COUNT)
    assert encode["context"].default == defaults.CONTEXT
    # compare's lineup options stay unset (they are refused beside run folders): the help names the defaults
    compare = params("compare")
    assert compare["min_count"].default is None and f"default {defaults.MIN_COUNT}" in compare["min_count"].help
    assert f"default {defaults.CONTEXT}" in compare["context"].help


def test_defaults_are_valid_and_translation_keeps_sentence_context():
    Protocol(level=defaults.LEVEL, context=defaults.CONTEXT)
    assert defaults.context_for("translate") == "sentence"
    assert defaults.context_for("lm") == defaults.CONTEXT
    assert defaults.context_for("translate", "stream") == "stream"  # asked for: the protocol then refuses it


@pytest.mark.parametrize("command", [["train"], ["curve"], ["vocab", "build"]])
def test_help_shows_the_defaults(command):
    out = cli(*command, "--help").stdout
    assert re.search(rf"default:\s*{defaults.MIN_COUNT}\b", out), out


def test_train_compare_curve_and_vocab_build_agree(corpus: Path, tmp_path: Path):
    """Runs made with no options by each command are measured the same way: one protocol, one vocabulary."""
    r = cli("train", "--model", "ngram:kn2", "--corpus", corpus, "-o", tmp_path / "mine")
    assert r.exit_code == 0, r.stderr
    mine = run_json(tmp_path / "mine")
    assert mine["protocol"]["context"] == defaults.CONTEXT and mine["protocol"]["level"] == defaults.LEVEL
    vocab = json.loads((tmp_path / "mine" / "vocab.json").read_text())
    assert vocab["min_count"] == defaults.MIN_COUNT
    assert r.stderr.count("(default)") == 3 and f"min-count {defaults.MIN_COUNT} (default)" in r.stderr
    assert f"{defaults.CONTEXT} context (default)" in r.stderr and f"{defaults.LEVEL} level (default)" in r.stderr

    r = cli("compare", "--models", "ngram:kn2", "--corpus", corpus, "-o", tmp_path / "lineup", "-f", "json")
    assert r.exit_code == 0, r.stderr
    lineup = run_json(next((tmp_path / "lineup").iterdir()))
    r = cli("curve", "--models", "ngram:kn2", "--fractions", "1", "--corpus", corpus, "--runs-dir",
            tmp_path / "curve", "-f", "json")
    assert r.exit_code == 0, r.stderr
    curve = run_json(tmp_path / "curve" / "ngram-kn2-f1")
    r = cli("vocab", "build", corpus / "train.txt", "-o", tmp_path / "v.json")
    assert r.exit_code == 0, r.stderr
    built = json.loads((tmp_path / "v.json").read_text())
    for other in (lineup, curve):
        assert (other["protocol_hash"], other["vocab_id"]) == (mine["protocol_hash"], mine["vocab_id"])
    assert built["vocab_id"] == mine["vocab_id"]
    r = cli("compare", tmp_path / "mine", next((tmp_path / "lineup").iterdir()), "-f", "json")
    assert r.exit_code == 0, r.stderr  # a user's own run stands beside a lineup's


def test_options_given_are_used_and_named_without_default(corpus: Path, tmp_path: Path):
    r = cli("train", "--model", "ngram:kn2", "--corpus", corpus, "--min-count", "1", "--context", "sentence",
            "-o", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    rec = run_json(tmp_path / "r")
    assert rec["protocol"]["context"] == "sentence"
    assert json.loads((tmp_path / "r" / "vocab.json").read_text())["min_count"] == 1
    line = next(s for s in r.stderr.splitlines() if s.startswith("settings:"))
    assert line == "settings: word level (default), min-count 1, sentence context", line


def test_vocab_keeps_its_own_min_count_and_a_given_one_is_refused(corpus: Path, tmp_path: Path):
    assert cli("vocab", "build", corpus / "train.txt", "--min-count", "1", "-o", tmp_path / "v.json").exit_code == 0
    r = cli("train", "--model", "ngram:kn2", "--corpus", corpus, "--vocab", tmp_path / "v.json", "-o", tmp_path / "r")
    assert r.exit_code == 0, r.stderr  # the default min-count is no request to rebuild the vocabulary
    assert "(min-count 1)" in r.stderr
    one_error_line(cli("train", "--model", "ngram:kn2", "--corpus", corpus, "--vocab", tmp_path / "v.json",
                       "--min-count", "2", "-o", tmp_path / "s"), code=2, match="--min-count")


def test_translation_defaults_to_sentence_context(tmp_path: Path):
    d = tmp_path / "pairs"
    d.mkdir()
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        (d / f"{split}.de").write_text("".join(f"der hund {i % 2}\n" for i in range(n)))
        (d / f"{split}.en").write_text("".join(f"the dog {i % 2}\n" for i in range(n)))
    r = cli("train", "--model", "ngram:kn2", "--corpus", d, "--src", "de", "--tgt", "en", "-o", tmp_path / "t")
    assert r.exit_code == 0, r.stderr
    assert run_json(tmp_path / "t")["protocol"]["context"] == "sentence"
    assert "sentence context (default)" in r.stderr
    one_error_line(cli("train", "--model", "ngram:kn2", "--corpus", d, "--src", "de", "--tgt", "en", "--context",
                       "stream", "-o", tmp_path / "u"), code=2, match="--context sentence")
