"""`lmkit analyze`: per-token NLL by bucket (history frequency in train, line length, OOV) of comparable runs."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line, train

from lmkit import api
from lmkit.analyze import DIMENSIONS, history_counts, parse_by
from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import Vocab
from lmkit.errors import DataError, IncomparableError, UsageError
from lmkit.protocol import Protocol

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs(tiny_corpus: Path, tmp_path: Path) -> list[Path]:
    return [train(tiny_corpus, tmp_path / "runs" / name, spec)
            for name, spec in (("kn3", "ngram:kn3"), ("laplace2", "ngram:laplace2"))]


# -- history counts ---------------------------------------------------------------------------------
def _ids(corpus: Path, split: str, context: str = "sentence"):
    p = Protocol(context=context)
    vocab = Vocab.build(count_tokens(read_text(corpus / "train.txt"), p), min_count=1)
    return vocab, encode(read_text(corpus / f"{split}.txt"), vocab, p).sequences


def _brute_force(train: list[np.ndarray], test: list[np.ndarray], order: int, context: str) -> list[int]:
    """Independent count: pad every sentence with n-1 <s> (or the stream once) and count tuples."""
    def units(seqs):
        if context == "stream":
            return [["<s>"] * (order - 1) + [t for s in seqs for t in [*s.tolist(), "</s>"]]]
        return [["<s>"] * (order - 1) + s.tolist() + ["</s>"] for s in seqs]

    counts: Counter = Counter()
    for u in units(train):
        # padding <s> are counted as often as a unit starts, so "<s> <s>" = units, "<s> w" = units starting with w
        for i in range(len(u) - (order - 1) + 1):
            counts[tuple(u[i:i + order - 1])] += 1
    out = []
    for u in units(test):
        out += [counts[tuple(u[j - (order - 1):j])] for j in range(order - 1, len(u))]
    return out


def test_history_counts_by_hand(tiny_corpus):
    # train: "the cat sat on the mat" / "the dog sat on the log" / "a cat saw a dog" / (blank) / "the cat ate"
    # test:  "the cat sat on the log" / "the bird sat" (bird is <unk>)
    vocab, test = _ids(tiny_corpus, "test")
    _, train_ids = _ids(tiny_corpus, "train")
    # sentence context, order 3: the(<s>: 4 lines) cat(<s> the: 3) sat(the cat: 2) on(cat sat: 1) the(sat on: 2)
    # log(on the: 2) </s>(the log: 1) | the(<s>: 4) <unk>(<s> the: 3) sat(the <unk>: 0) </s>(<unk> sat: 0)
    got = history_counts(train_ids, test, len(vocab), 3, "sentence")
    assert got.tolist() == [4, 3, 2, 1, 2, 2, 1, 4, 3, 0, 0]
    # stream context: one <s> in all of train; histories run across </s>: "log </s>" once, "</s> the" twice
    got = history_counts(train_ids, test, len(vocab), 3, "stream")
    assert got.tolist() == [1, 1, 2, 1, 2, 2, 1, 1, 2, 0, 0]
    # order 2: one previous token; "the" occurs 5 times in train, "sat" twice, <unk> never
    got = history_counts(train_ids, test, len(vocab), 2, "sentence")
    assert got.tolist() == [4, 5, 3, 2, 2, 5, 1, 4, 5, 0, 2]


@pytest.mark.parametrize("context", ["sentence", "stream"])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_history_counts_match_brute_force(context, order):
    p = Protocol(context=context)
    train_text = read_text(REPO / "corpora" / "shakespeare" / "train.txt")
    train_text.lines = train_text.lines[:400]
    test_text = read_text(REPO / "corpora" / "shakespeare" / "test.txt")
    test_text.lines = test_text.lines[:60]
    vocab = Vocab.build(count_tokens(train_text, p), min_count=2)
    train_ids, test_ids = (encode(t, vocab, p).sequences for t in (train_text, test_text))
    got = history_counts(train_ids, test_ids, len(vocab), order, context)
    assert got.tolist() == _brute_force(train_ids, test_ids, order, context)
    assert (got >= 10).any() and (order == 2 or (got == 0).any())  # the buckets are exercised (every
    # in-vocabulary word, <unk> included, occurs in train: order 2 has no unseen history)


# -- the analysis -----------------------------------------------------------------------------------
def test_buckets_add_up_and_reproduce_the_recorded_test_perplexity(runs, tiny_corpus):
    result = api.analyze(runs)
    data = result.to_dict()
    assert list(data["by"]) == list(DIMENSIONS)
    test_lines = [ln.split() for ln in (tiny_corpus / "test.txt").read_text().splitlines() if ln.strip()]
    total_tokens = sum(len(ln) + 1 for ln in test_lines)
    vocab = Vocab.load(runs[0] / "vocab.json")
    oov = sum(w not in vocab.index for ln in test_lines for w in ln)
    assert data["text"]["tokens"] == total_tokens == 11 and data["text"]["oov"] == oov == 1
    records = [json.loads((r / "run.json").read_text()) for r in runs]
    recorded = {rec["label"]: rec for rec in records}
    for buckets in data["by"].values():
        *parts, total = buckets
        assert total["bucket"] == "total" and total["tokens"] == total_tokens and total["share"] == 1.0
        assert sum(b["tokens"] for b in parts) == total_tokens
        assert sum(b["share"] for b in parts) == pytest.approx(1.0)
        for name, rec in recorded.items():
            test = rec["metrics"]["test"]
            assert total["models"][name]["perplexity"] == pytest.approx(test["perplexity"], rel=1e-9)
            weighted = sum(b["tokens"] * b["models"][name]["nll_nats"] for b in parts if b["tokens"])
            assert weighted / total_tokens == pytest.approx(test["cross_entropy_nats"], rel=1e-9)
            for b in parts:
                m = b["models"][name]
                if b["tokens"]:
                    assert m["perplexity"] == pytest.approx(math.exp(m["nll_nats"]))
                else:
                    assert m["nll_nats"] is None and b["winner"] is None
        for b in buckets:  # the winner has the lowest mean NLL of the bucket
            if b["tokens"]:
                assert b["winner"] == min(b["models"], key=lambda n: b["models"][n]["nll_nats"])
    for name, rec in recorded.items():  # the in-vocabulary bucket is exactly the excl.-OOV perplexity
        known = data["by"]["oov"][0]
        assert known["models"][name]["perplexity"] == pytest.approx(rec["metrics"]["test"]["perplexity_excl_oov"])
    oov_buckets = {b["bucket"]: b["tokens"] for b in data["by"]["oov"]}
    assert oov_buckets == {"in vocabulary": 10, "<unk>": 1, "total": 11}
    freq = {b["bucket"]: b["tokens"] for b in data["by"]["context-frequency"]}
    assert freq == {"unseen": 2, "1": 2, "2-9": 7, "10+": 0, "total": 11}  # from the hand count above
    length = {b["bucket"]: b["tokens"] for b in data["by"]["length"]}
    assert length == {"1-10": 11, "11-20": 0, "21-40": 0, "41+": 0, "total": 11}
    assert data["train"]["recorded"] is True and data["text"]["is_test_file"] is True
    assert [r["recorded_test_perplexity"] for r in data["runs"]] == [recorded[r["name"]]["metrics"]["test"]
                                                                     ["perplexity"] for r in data["runs"]]


def test_per_bucket_nll_matches_per_token_scores(runs, tiny_corpus):
    """Cross-check against `lmkit score --per-token`: the mean NLL of the <unk> bucket and of each line
    length, computed from the per-token records of the ordinary score command."""
    result = api.analyze(runs, "oov,length")
    for run in runs:
        scored = api.score(run, tiny_corpus / "test.txt")
        tokens = scored.score.per_token()
        name = scored.model
        unk = [-t["logprob"] for t in tokens if t["oov"]]
        oov = {b["bucket"]: b for b in result.buckets("oov")}
        assert oov["<unk>"]["models"][name]["nll_nats"] == pytest.approx(np.mean(unk))
        known = [-t["logprob"] for t in tokens if not t["oov"]]
        assert oov["in vocabulary"]["models"][name]["nll_nats"] == pytest.approx(np.mean(known))
        short = {b["bucket"]: b for b in result.buckets("length")}["1-10"]
        assert short["models"][name]["nll_nats"] == pytest.approx(np.mean([-t["logprob"] for t in tokens]))


def test_longer_lines_and_a_text_override(runs, tmp_path):
    text = tmp_path / "other.txt"
    long_line = " ".join(["the cat sat on the mat"] * 4)  # 24 words + </s> = 25 scored tokens
    text.write_text(f"the dog sat\n{long_line}\n\n{' '.join(['a dog'] * 25)}\n")
    result = api.analyze(runs, ["length"], text=text)
    length = {b["bucket"]: b["tokens"] for b in result.buckets("length")}
    assert length == {"1-10": 4, "11-20": 0, "21-40": 25, "41+": 51, "total": 80}
    data = result.to_dict()
    assert data["text"]["is_test_file"] is False and data["text"]["path"] == str(text)
    assert all(r["recorded_test_perplexity"] is None for r in data["runs"])  # another file: nothing to match


def test_refusals(runs, tiny_corpus, tmp_path):
    stream = train(tiny_corpus, tmp_path / "runs" / "kn3-stream", "ngram:kn3", context="stream")
    with pytest.raises(IncomparableError, match="protocol differs"):
        api.analyze([runs[0], stream])
    with pytest.raises(UsageError, match="context-frequency, length, oov"):
        parse_by("length,bigram")
    assert parse_by("oov, length,oov") == ["oov", "length"]
    with pytest.raises(UsageError, match="--order"):
        api.analyze(runs, order=1)
    line = one_error_line(cli("analyze", runs[0], stream), code=1)
    assert "protocol differs" in line
    line = one_error_line(cli("analyze", *runs, "--by", "context,oov"), code=2)
    assert "context-frequency, length, oov" in line
    one_error_line(cli("analyze", *runs, "--order", "0"), code=2)


def test_train_file_missing_or_changed(runs, tiny_corpus, tmp_path):
    moved = tmp_path / "moved-train.txt"
    (tiny_corpus / "train.txt").rename(moved)
    with pytest.raises(DataError, match="--train FILE"):
        api.analyze(runs)
    line = one_error_line(cli("analyze", *runs), code=1)
    assert "train file is not available" in line
    r = cli("analyze", *runs, "--train", moved, "--format", "json")  # the override: same content, new place
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["train"]["recorded"] is True
    (tiny_corpus / "train.txt").write_text("the cat sat\n")  # a changed file at the recorded path
    line = one_error_line(cli("analyze", *runs), code=1)
    assert "changed since" in line
    r = cli("analyze", *runs, "--train", tiny_corpus / "train.txt", "--by", "context-frequency", "--format", "json")
    assert r.exit_code == 0 and "warning" in r.stderr  # counted in the given file, with a warning
    data = json.loads(r.stdout)
    assert data["train"]["recorded"] is False
    freq = {b["bucket"]: b["tokens"] for b in data["by"]["context-frequency"]}
    # in "the cat sat": <s> once (2 test lines start from it: 1 each), "<s> the" once (the cat, the <unk>),
    # "the cat" once (sat), "cat sat" once (on) -> 6 tokens in bucket 1, the other 5 histories unseen
    assert freq == {"unseen": 5, "1": 6, "2-9": 0, "10+": 0, "total": 11}


def test_formats(runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    def out(*args) -> str:
        r = cli("analyze", *runs, *args)
        assert r.exit_code == 0, r.stderr
        return r.stdout

    data = json.loads(out("--format", "json"))
    assert data["schema"] == 1 and data["order"] == 3 and data["protocol"]["context"] == "sentence"
    assert [r["name"] for r in data["runs"]] == ["ngram:kn3", "ngram:laplace2"]
    assert set(data["by"]) == set(DIMENSIONS)
    bucket = data["by"]["context-frequency"][0]
    assert set(bucket) == {"bucket", "tokens", "share", "models", "winner"}
    assert set(bucket["models"]["ngram:kn3"]) == {"nll_nats", "perplexity"}
    rows = list(csv.DictReader(io.StringIO(out("--format", "csv", "--by", "oov,length"))))
    assert [r["by"] for r in rows] == ["oov"] * 3 + ["length"] * 5
    assert float(rows[2]["ngram:kn3 ppl"]) == pytest.approx(data["runs"][0]["perplexity"], rel=1e-5)
    lines = [json.loads(x) for x in out("--format", "jsonl").splitlines()]
    assert len(lines) == 5 + 5 + 3 and lines[0]["by"] == "context-frequency"
    table = out("--format", "table")
    assert "by context frequency" in table and "winner" in table and "ngram:laplace2 ppl" in table
    md = out("--format", "markdown", "--by", "oov")
    assert md.startswith("**by OOV") and "| bucket | tokens | share |" in md


def test_with_a_tiny_neural_run(runs, tiny_corpus, tmp_path):
    pytest.importorskip("torch")
    lstm = train(tiny_corpus, tmp_path / "runs" / "lstm", "lstm",
                 options={"layers": 1, "hidden": 16, "embed": 16},
                 train_options={"epochs": 1, "batch_size": 2, "threads": 1})
    result = api.analyze([runs[0], lstm], "oov")
    rec = json.loads((lstm / "run.json").read_text())
    total = result.buckets("oov")[-1]
    assert total["models"]["lstm"]["perplexity"] == pytest.approx(rec["metrics"]["test"]["perplexity"], rel=1e-6)
    assert total["winner"] in ("lstm", "ngram:kn3")
    r = cli("analyze", runs[0], lstm, "--by", "oov", "--device", "cpu", "--format", "json")  # neural rescoring device
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["by"]["oov"][-1]["models"]["lstm"]["perplexity"] == pytest.approx(
        total["models"]["lstm"]["perplexity"], rel=1e-9)


def test_translation_run_buckets_the_target_side_only(tmp_path):
    """A prefix LM over `source <sep> target`: only target tokens and </s> are bucketed, their histories
    reach back through <sep> into the source, as the model's do."""
    import random

    rng = random.Random(0)
    words = "a b c d e f".split()

    def pairs(n):
        out = []
        for _ in range(n):
            src = [rng.choice(words) for _ in range(rng.randint(1, 4))]
            out.append((" ".join(src), " ".join(w.upper() for w in src)))
        return out

    d = tmp_path / "pairs"
    d.mkdir()
    for split, n in (("train", 80), ("valid", 10), ("test", 15)):
        data = pairs(n)
        (d / f"{split}.src").write_text("".join(f"{s}\n" for s, _ in data))
        (d / f"{split}.tgt").write_text("".join(f"{t}\n" for _, t in data))
    run = train(d, tmp_path / "kn3", "ngram:kn3")
    rec = json.loads((run / "run.json").read_text())
    assert rec["protocol"]["task"] == "translate"
    result = api.analyze([run], order=3)
    freq = {b["bucket"]: b for b in result.buckets("context-frequency")}
    assert freq["total"]["tokens"] == rec["metrics"]["test"]["tokens"]
    assert freq["total"]["models"]["ngram:kn3"]["perplexity"] == pytest.approx(rec["metrics"]["test"]["perplexity"])
    model, _ = api.load_model(run)
    from lmkit.data.corpus import read_pair

    enc = {s: encode(read_pair(d / f"{s}.src", d / f"{s}.tgt"), model.vocab, model.protocol) for s in ("train", "test")}
    full = _brute_force(enc["train"].sequences, enc["test"].sequences, 3, "sentence")
    lens = [len(s) + 1 for s in enc["test"].sequences]
    starts = np.cumsum([0, *lens[:-1]])
    target_side = [c for st, n, f in zip(starts, lens, enc["test"].score_from) for c in full[st + f:st + n]]
    expected = Counter("unseen" if c == 0 else "1" if c == 1 else "2-9" if c < 10 else "10+" for c in target_side)
    assert {k: b["tokens"] for k, b in freq.items() if k != "total"} == {k: expected[k] for k in
                                                                          ("unseen", "1", "2-9", "10+")}
    assert expected["10+"] and expected["unseen"] + expected["1"] + expected["2-9"]  # more than one bucket
    with pytest.raises(UsageError, match="translation run"):
        api.analyze([run], text=d / "test.tgt")


def test_a_runs_stored_per_token_scores_spare_rescoring_and_agree_with_it(tiny_corpus, tmp_path):
    """On its own test file a run's stored per-token NLLs (test_scores.npz) are bucketed without loading the model,
    with the numbers rescoring gives; a stored file that does not add up is warned about and rescored instead."""
    import shutil

    from lmkit.evaluate.per_sequence import TEST_SCORES_FILE

    runs = [train(tiny_corpus, tmp_path / "runs" / name, spec)
            for name, spec in (("kn3", "ngram:kn3"), ("mlp", "mlp"))]
    for run in runs:
        with np.load(run / TEST_SCORES_FILE) as data:
            assert data["token_nll"].size == int(data["tokens"].sum())  # stored when the run was measured
    said: list[str] = []
    stored = api.analyze(runs, log=said.append).to_dict()
    assert not any("scoring the text" in s for s in said), said
    copies = []
    for run in runs:
        copy = tmp_path / "copies" / run.name
        shutil.copytree(run, copy)
        (copy / TEST_SCORES_FILE).unlink()
        copies.append(copy)
    said.clear()
    rescored = api.analyze(copies, log=said.append).to_dict()
    assert sum("scoring the text" in s for s in said) == 2
    for dim in stored["by"]:
        for a, b in zip(stored["by"][dim], rescored["by"][dim]):
            assert a["tokens"] == b["tokens"]
            for name in a["models"]:
                x, y = a["models"][name]["nll_nats"], b["models"][name]["nll_nats"]
                assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12)

    with np.load(runs[1] / TEST_SCORES_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["token_nll"] = arrays["token_nll"][::-1].copy()  # right total, wrong tokens
    arrays["token_nll"][0] += 0.5
    with (runs[1] / TEST_SCORES_FILE).open("wb") as fh:
        np.savez(fh, **arrays)
    said.clear()
    again = api.analyze(runs, log=said.append).to_dict()
    assert any("do not add up" in s and "rescoring instead" in s for s in said), said
    assert again["by"] == stored["by"]
