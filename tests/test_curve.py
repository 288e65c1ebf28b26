"""`lmkit curve`: nested training prefixes, one vocabulary and test file for all runs, the plot, errors."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line
from typer.testing import CliRunner

from lmkit import api
from lmkit.curve import COLUMNS, DEFAULT_RUN_BUDGET, nested_prefixes, neural_budget, parse_fractions
from lmkit.errors import UsageError
from lmkit.runs import read_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()
WORDS = [f"w{i}" for i in range(40)]


def _lines(rng, n: int, successors: list[np.ndarray]) -> list[str]:
    out = []
    for _ in range(n):
        w = int(rng.integers(len(WORDS)))
        ids = [w]
        for _ in range(int(rng.integers(4, 10))):
            w = int(rng.choice(successors[w]))
            ids.append(w)
        out.append(" ".join(WORDS[i] for i in ids))
    return out


@pytest.fixture(scope="module")
def markov(tmp_path_factory) -> Path:
    """A sparse bigram process (3 successors per word): a small sample misses most transitions, so an
    n-gram model's test perplexity must fall as its training prefix grows. Train has blank lines."""
    d = tmp_path_factory.mktemp("markov")
    rng = np.random.default_rng(7)
    successors = [rng.choice(len(WORDS), size=3, replace=False) for _ in WORDS]
    train = _lines(rng, 800, successors)
    for i in range(50, len(train), 100):  # blank lines are formatting: never counted as training lines
        train[i] = "  "
    (d / "train.txt").write_text("\n".join(train) + "\n")
    (d / "valid.txt").write_text("\n".join(_lines(rng, 80, successors)) + "\n")
    (d / "test.txt").write_text("\n".join(_lines(rng, 80, successors)) + "\n")
    return d


@pytest.fixture(scope="module")
def kn_curve(markov, tmp_path_factory) -> tuple[Path, list[dict]]:
    runs = tmp_path_factory.mktemp("curve") / "runs"
    rows = api.curve(markov, ["ngram:kn3", "ngram:wb2"], "1,0.05,0.25", runs_dir=runs)
    return runs, rows


def _first_lines(path: Path, n: int) -> bytes:
    """Independent prefix: the text up to and including the n-th non-blank line."""
    out, kept = [], 0
    for line in path.read_text().split("\n"):
        out.append(line)
        kept += bool(line.strip())
        if kept == n:
            return ("\n".join(out) + "\n").encode()
    raise AssertionError("too few lines")


def test_training_sets_are_nested_prefixes(markov, kn_curve):
    runs, rows = kn_curve
    non_blank = sum(1 for line in (markov / "train.txt").read_text().splitlines() if line.strip())
    assert non_blank == 792
    train_files = {}
    for row in rows:
        record = read_record(row["run"])
        path = Path(record.data["train"]["path"])
        assert row["train_lines"] == math.floor(row["fraction"] * non_blank)  # 39, 198, 792
        assert record.data["train"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        train_files.setdefault(row["fraction"], path)
        assert train_files[row["fraction"]] == path  # both models of a fraction train on one file
    assert train_files[1.0] == markov / "train.txt"  # the whole split is the train file itself
    small, mid, full = (train_files[f].read_bytes() for f in (0.05, 0.25, 1.0))
    assert full.startswith(mid) and mid.startswith(small) and len(small) < len(mid) < len(full)
    assert small == _first_lines(markov / "train.txt", 39) and mid == _first_lines(markov / "train.txt", 198)


def test_one_vocabulary_protocol_and_test_file(markov, kn_curve):
    runs, rows = kn_curve
    records = [read_record(r["run"]) for r in rows]
    assert len(records) == 6
    assert len({r.vocab_id for r in records}) == 1
    assert len({json.dumps(r.protocol, sort_keys=True) for r in records}) == 1
    assert records[0].protocol["context"] == "stream"
    test_sha = hashlib.sha256((markov / "test.txt").read_bytes()).hexdigest()
    assert {r.data["test"]["sha256"] for r in records} == {test_sha}
    assert {r.data["valid"]["tokens"] for r in records} == {records[0].data["valid"]["tokens"]}
    # the vocabulary is the full train split's with min-count 2, whatever a run's fraction
    counts = Counter((markov / "train.txt").read_text().split())
    vocab = json.loads((runs / "vocab.json").read_text())
    assert len(vocab["tokens"]) == 4 + sum(1 for c in counts.values() if c >= 2)


def test_ngram_perplexity_falls_with_more_data(kn_curve):
    _, rows = kn_curve
    assert [r["model"] for r in rows] == ["ngram:kn3"] * 3 + ["ngram:wb2"] * 3  # given order, then fraction
    for model in ("ngram:kn3", "ngram:wb2"):
        ppl = [r["test_ppl"] for r in rows if r["model"] == model]
        tokens = [r["train_tokens"] for r in rows if r["model"] == model]
        assert tokens == sorted(tokens) and len(set(tokens)) == 3
        assert ppl[0] > ppl[1] > ppl[2], ppl
    assert all(r["epochs"] == 1.0 and r["tokens_seen"] == r["train_tokens"] for r in rows)


def test_rows_match_a_plain_train_on_the_same_prefix(markov, kn_curve, tmp_path):
    """The curve adds nothing to a run: training kn3 by hand on a hand-cut prefix gives the same numbers."""
    runs, rows = kn_curve
    row = next(r for r in rows if r["model"] == "ngram:kn3" and r["fraction"] == 0.25)
    prefix = tmp_path / "train-quarter.txt"
    prefix.write_bytes(_first_lines(markov / "train.txt", 198))
    run = api.train(api.TrainRequest(model="ngram:kn3", train=prefix, valid=markov / "valid.txt",
                                     test=markov / "test.txt", vocab=runs / "vocab.json", context="stream",
                                     output=tmp_path / "by-hand", progress=False))
    metrics = read_record(run).metrics
    assert metrics["test"]["perplexity"] == pytest.approx(row["test_ppl"], rel=1e-12)
    assert metrics["valid"]["perplexity"] == pytest.approx(row["valid_ppl"], rel=1e-12)
    saved = json.loads((runs / "curve.json").read_text())
    assert saved["schema"] == 1 and saved["rows"] == rows and saved["fractions"] == [0.05, 0.25, 1.0]


def test_cli_json_and_png(markov, tmp_path):
    png = tmp_path / "fig" / "curve.png"
    r = cli("curve", "--corpus", markov, "--models", "ngram:kn3", "--fractions", "0.1,1", "--runs-dir",
            tmp_path / "runs", "-o", png, "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [list(row) for row in rows] == [list(COLUMNS)] * 2
    assert [row["fraction"] for row in rows] == [0.1, 1.0] and rows[0]["test_ppl"] > rows[1]["test_ppl"]
    assert f"wrote {png}" in r.stderr
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    from matplotlib.image import imread

    assert imread(png).shape[2] in (3, 4) and imread(png).shape[0] > 100  # decodes as an image
    assert [p.name for p in png.parent.iterdir()] == ["curve.png"]  # atomic: no temp file left
    from lmkit.cli import app

    r = runner.invoke(app, [str(a) for a in ("curve", "--corpus", markov, "--models", "ngram:kn3", "--fractions",
                                             "0.1,1", "--runs-dir", tmp_path / "runs2", "--format", "table", "-q",
                                             "--seed", "3")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0 and r.stderr == ""
    assert all(json.loads(run.read_text())["seed"] == 3 for run in (tmp_path / "runs2").glob("*/run.json"))
    assert "learning curve" in r.stdout and "train tokens" in r.stdout
    assert f"{rows[0]['test_ppl']:,.2f}" in r.stdout  # same numbers, rounded for people


def test_neural_runs_get_the_budget_per_run(markov, tmp_path):
    """--epochs 1: every LSTM run passes once over its own fraction (the natural learning-curve budget)."""
    rows = api.curve(markov, ["lstm"], [0.25, 1], epochs=1, runs_dir=tmp_path / "runs", device="cpu",
                     sets=["lstm.hidden=8", "embed=8", "seq_len=16"])
    assert [r["fraction"] for r in rows] == [0.25, 1.0]
    for row in rows:
        record = read_record(row["run"])
        assert record.config["hidden"] == 8 and record.train_config["epochs"] == 1.0
        assert record.train_config["time_budget"] is None  # a budget was given: no default time budget
        assert 0.8 * row["train_tokens"] <= row["tokens_seen"] <= row["train_tokens"]
        assert row["epochs"] == pytest.approx(row["tokens_seen"] / row["train_tokens"])
        assert math.isfinite(row["test_ppl"]) and row["test_ppl"] < 2 * len(WORDS)  # sane, not diverged
    assert len({read_record(r["run"]).vocab_id for r in rows}) == 1


def test_budget_defaults():
    assert neural_budget() == {"epochs": None, "max_tokens": None, "time_budget": DEFAULT_RUN_BUDGET}
    assert neural_budget(epochs=3) == {"epochs": 3, "max_tokens": None, "time_budget": None}
    assert neural_budget(time_budget="2m")["time_budget"] == 120.0
    assert neural_budget(sets=["lstm.max_tokens=500"])["time_budget"] is None


def test_fraction_parsing_and_cuts():
    assert parse_fractions("1, 0.1,0.01") == [0.01, 0.1, 1.0]
    for bad, message in (("0", r"\(0, 1\]"), ("1.5", r"\(0, 1\]"), ("-0.1", r"\(0, 1\]"), ("nan", r"\(0, 1\]"),
                         ("0.1,0.1", "given twice"), ("0.1,x", "comma-separated numbers"), ("", "numbers")):
        with pytest.raises(UsageError, match=message):
            parse_fractions(bad)
    data = b"\xef\xbb\xbfa b\r\n\r\nc d\n \ne f\ng h"  # BOM, CRLF, blank lines, no final newline
    lines = ["a b", "", "c d", " ", "e f", "g h"]
    cuts = nested_prefixes(data, lines, [0.25, 0.5, 0.75, 1.0])
    assert [(c.lines, data[:c.end]) for c in cuts] == [
        (1, b"\xef\xbb\xbfa b\r\n"), (2, b"\xef\xbb\xbfa b\r\n\r\nc d\n"),
        (3, b"\xef\xbb\xbfa b\r\n\r\nc d\n \ne f\n"), (4, data)]
    with pytest.raises(UsageError, match=r"fraction 0.1 of 4 training lines is zero lines.*0.25"):
        nested_prefixes(data, lines, [0.1, 1.0])
    with pytest.raises(UsageError, match="both give the first 1 of 4 training lines"):
        nested_prefixes(data, lines, [0.25, 0.3])


def test_errors_come_before_any_training(markov, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    base = ("curve", "--corpus", markov, "--runs-dir", runs)
    assert "unknown model 'lstn'" in one_error_line(cli(*base, "--models", "ngram:kn3,lstn"), 2)
    assert "given twice" in one_error_line(cli(*base, "--fractions", "0.5,0.5"), 2)
    assert "(0, 1]" in one_error_line(cli(*base, "--fractions", "0,1"), 2)
    assert "zero lines" in one_error_line(cli(*base, "--models", "ngram:kn3", "--fractions", "0.001,1"), 2)
    assert ".png" in one_error_line(cli(*base, "--models", "ngram:kn3", "-o", tmp_path / "c.jpg"), 2)
    assert "unknown setting 'hiden'" in one_error_line(cli(*base, "--models", "lstm", "--set", "hiden=8"), 2)
    assert "not a family of this curve" in one_error_line(cli(*base, "--models", "lstm", "--set", "mlp.window=2"), 2)
    assert "applies to neural models" in one_error_line(cli(*base, "--models", "ngram:kn3", "--set", "lr=1"), 2)
    assert "twice" in one_error_line(cli(*base, "--models", "ngram:kn3,ngram:kn3"), 2)
    no_test = tmp_path / "no-test"
    no_test.mkdir()
    for split in ("train", "valid"):
        (no_test / f"{split}.txt").write_bytes((markov / f"{split}.txt").read_bytes())
    assert "no test split" in one_error_line(cli("curve", "--corpus", no_test, "--runs-dir", runs), 1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    line = one_error_line(cli(*base, "--models", "ngram:kn3", "-o", tmp_path / "c.png"), 2)
    assert line == "error: lmkit curve -o needs matplotlib: pip install 'lmkit[plot]'"
    assert not runs.exists() and not (tmp_path / "c.png").exists()
