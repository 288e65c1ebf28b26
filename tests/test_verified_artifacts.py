"""Every artifact lmkit reads back is verified: token caches by content hash, ARPA files by value and line
length, recorded corpus files by their recorded sha256 (check, score, resume, mix, analyze, compare --bleu),
and run.json by range and by the perplexity its own NLL and token count give. Each case is refused (or,
for a cache, rebuilt) with one line naming the file; docs/reliability.md lists them."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line, train
from conftest import shared_path

from lmkit import api
from lmkit.data.corpus import read_recorded
from lmkit.data.tokenfile import TokenFile, lookup
from lmkit.data.vocab import Vocab
from lmkit.errors import DataError, ModelError
from lmkit.models.ngram import load_arpa
from lmkit.protocol import Protocol

LINES = ["the cat sees the ball today", "a bird likes the moon", "my friend finds a tree at night",
         "the dog chases the river", "a child hears some bread again", "the old man sees the moon"]


def _corpus(d: Path, seed: int = 3) -> Path:
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", 300), ("valid", 40), ("test", 40)):
        (d / f"{split}.txt").write_text("\n".join(LINES[i] for i in rng.integers(0, len(LINES), n)) + "\n")
    return d


def ok(*args):
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    return r


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:")]


# -- 1. token caches: a content hash checked on use -------------------------------------------------
def _edit_ids(folder: Path) -> None:
    """Change one id to another id of the vocabulary: same size, every id in range, only the hash can tell."""
    ids = np.memmap(folder / "ids.bin", dtype=json.loads((folder / "meta.json").read_text())["dtype"], mode="r+")
    ids[3] = 4 if ids[3] != 4 else 5
    ids.flush()
    del ids


def _edit_offsets(folder: Path) -> None:
    """Move one sequence boundary by one id, keeping offsets increasing: other sentences, same ids."""
    off = np.memmap(folder / "offsets.bin", dtype=np.int64, mode="r+")
    k = next(i for i in range(1, len(off) - 1) if off[i + 1] - off[i] > 1)
    off[k] += 1
    off.flush()
    del off


def _kn3_with_vocab(tmp_path):
    """(corpus, vocab.json, a kn3 run trained with it, that run's clean test score)."""
    corpus = _corpus(tmp_path / "c")
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", corpus / "train.txt", "-o", vocab_path, "-q")
    run = tmp_path / "kn3"
    ok("train", "--model", "ngram:kn3", "--corpus", corpus, "--vocab", vocab_path, "-o", run, "-q")
    return corpus, vocab_path, run, json.loads(ok("score", run, corpus / "test.txt", "--format", "json").stdout)


@pytest.mark.parametrize("edit", [_edit_ids, _edit_offsets], ids=["ids.bin", "offsets.bin"])
def test_tampered_token_cache_is_rebuilt_not_trusted(tmp_path, edit):
    corpus, vocab_path, run, clean = _kn3_with_vocab(tmp_path)
    ok("encode", "--corpus", corpus, "--vocab", vocab_path, "-q")
    vocab = Vocab.load(vocab_path)
    folder = lookup(corpus / "test.txt", vocab, Protocol()).path
    name = "ids.bin" if edit is _edit_ids else "offsets.bin"

    edit(folder)
    with pytest.raises(ModelError, match=f"{name} does not match the sha256 recorded in meta.json") as err:
        TokenFile.open(folder, vocab)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    r = ok("score", run, corpus / "test.txt", "--format", "json")
    assert len(warnings(r.stderr)) == 1 and "encoding it again" in warnings(r.stderr)[0], r.stderr
    assert json.loads(r.stdout)["perplexity"] == clean["perplexity"]  # the tampered ids never counted
    TokenFile.open(folder, vocab)  # rebuilt in place, sound again
    assert warnings(ok("score", run, corpus / "test.txt").stderr) == []

    # train --vocab reads the valid and test caches the same way: its numbers are the text's
    edit(folder)
    again = tmp_path / "kn3-again"
    r = ok("train", "--model", "ngram:kn3", "--corpus", corpus, "--vocab", vocab_path, "-o", again)
    damaged = [ln for ln in warnings(r.stderr) if "token file" in ln]  # (kn3 also warns about its discounts)
    assert len(damaged) == 1 and name in damaged[0] and "encoding it again" in damaged[0], r.stderr
    assert record(again)["metrics"]["test"]["perplexity"] == record(run)["metrics"]["test"]["perplexity"]


def test_tampered_token_cache_in_a_read_only_cache_is_bypassed(tmp_path, monkeypatch):
    corpus, vocab_path, run, clean = _kn3_with_vocab(tmp_path)
    ok("encode", "--corpus", corpus, "--vocab", vocab_path, "--splits", "test", "-q")
    folder = lookup(corpus / "test.txt", Vocab.load(vocab_path), Protocol()).path
    _edit_ids(folder)
    real = os.access

    def access(path, mode, *args, **kw) -> bool:  # root can write anywhere: say the cache is read-only
        return False if mode == os.W_OK and Path(path).name == "tokens" else real(path, mode, *args, **kw)

    monkeypatch.setattr(os, "access", access)
    r = ok("score", run, corpus / "test.txt", "--format", "json")
    assert len(warnings(r.stderr)) == 1 and "reading the text instead" in warnings(r.stderr)[0], r.stderr
    assert json.loads(r.stdout)["perplexity"] == clean["perplexity"]


def test_token_cache_hash_check_is_cheap(tmp_path):
    """The hash reads the three .bin files once: for 200k tokens it must stay far below a full encode."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(2000)]
    text = tmp_path / "big.txt"
    with open(text, "w") as fh:
        for _ in range(10_000):
            fh.write(" ".join(rng.choice(words, size=19)) + "\n")  # 200k scored tokens with </s>
    vocab_path = tmp_path / "vocab.json"
    ok("vocab", "build", text, "-o", vocab_path, "-q")
    ok("encode", "--test", text, "--vocab", vocab_path, "-q")
    vocab = Vocab.load(vocab_path)
    folder = lookup(text, vocab, Protocol()).path
    best = min(_timed(lambda: TokenFile.open(folder, vocab)) for _ in range(5))
    assert best < 0.25, best  # measured: 1.5-5 ms per million tokens (well under 1 ms here)


def _timed(fn) -> float:
    import time

    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- 2. ARPA files: values, counts and line length validated on load -------------------------------
@pytest.fixture(scope="module")
def arpa(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("arpa")
    corpus = _corpus(base / "c")
    run = train(corpus, base / "kn3", "ngram:kn3")
    return {"corpus": corpus, "path": api.export_arpa(run, base / "kn3.arpa")}


def _arpa_lines(arpa: dict) -> tuple[list[str], int, int]:
    """The exported file's lines, the index of its first real unigram (after <unk>), and of its first bigram."""
    lines = arpa["path"].read_text().split("\n")
    return (lines, lines.index("\\1-grams:") + 2, lines.index("\\2-grams:") + 1)


def _with_field(line: str, column: int, value: str) -> str:
    fields = line.split("\t")
    fields[column] = value
    return "\t".join(fields)


@pytest.mark.parametrize("case", ["probability above 0", "probability inf", "probability 1e999",
                                  "probability nan", "back-off inf", "back-off -inf", "count too high",
                                  "count too low", "count negative", "order listed twice"])
def test_arpa_values_and_counts_are_validated(arpa, tmp_path, case):
    lines, uni, bi = _arpa_lines(arpa)
    edited, line = list(lines), None
    if case.startswith("probability"):
        value = {"above 0": "0.25", "inf": "inf", "1e999": "1e999", "nan": "nan"}[case.split(" ", 1)[1]]
        edited[uni], line = _with_field(lines[uni], 0, value), uni + 1
        match = "is above 0 (a probability above 1)" if value == "0.25" else "is not a finite number"
        if value == "nan":
            match = "'nan' is not a finite number"
    elif case.startswith("back-off"):
        edited[uni], line = _with_field(lines[uni], 2, case.split(" ")[1]), uni + 1
        match = "back-off weight"
    elif case.startswith("count"):
        k = lines.index(next(ln for ln in lines if ln.startswith("ngram 2=")))
        n = int(lines[k].split("=")[1])
        edited[k] = f"ngram 2={ {'count too high': n + 1, 'count too low': n - 1, 'count negative': -1}[case]}"
        line, match = k + 1, "ngram 2=" if case != "count negative" else "cannot be negative"
    else:
        edited.insert(2, lines[1])  # "ngram 1=..." twice
        line, match = 3, "lists ngram 1 twice"
    path = tmp_path / "edited.arpa"
    path.write_text("\n".join(edited))
    with pytest.raises(ModelError, match=f"line {line}: .*{re.escape(match)}"):
        load_arpa(path)
    err = one_error_line(cli("score", path, arpa["corpus"] / "test.txt"))
    assert f"{path}: line {line}: " in err and match in err


def test_arpa_log10_zero_and_kenlm_dummy_are_accepted(arpa, tmp_path):
    """0 (KenLM's <s>) and -99 (SRILM's log 0) are valid values; only > 0 is refused."""
    lines, uni, _ = _arpa_lines(arpa)
    edited = list(lines)
    edited[uni] = _with_field(lines[uni], 0, "-99")
    edited[uni + 1] = _with_field(lines[uni + 1], 0, "-0")
    path = tmp_path / "ok.arpa"
    path.write_text("\n".join(edited))
    assert load_arpa(path).normalised


def test_kenlm_reference_files_pass_the_validation():
    """KenLM's own files: every log10 probability is <= 0 exactly, so no rounding slack is needed."""
    model = load_arpa(shared_path("reference", "kenlm", "tinyshakespeare", "kn3.arpa.gz"))
    assert model.order == 3 and model.normalised


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_arpa_line_too_long_is_refused_without_reading_it_whole(tmp_path, packed):
    """A 24 MB line (a file without line breaks) is refused at 1 MiB, in bounded memory: never read whole."""
    head = b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t"
    path = tmp_path / ("long.arpa.gz" if packed else "long.arpa")
    chunk = b"x" * (1 << 20)
    with (gzip.open(path, "wb", compresslevel=1) if packed else open(path, "wb")) as fh:
        fh.write(head)
        for _ in range(24):
            fh.write(chunk)
        fh.write(b"\n\\end\\\n")
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="line 5: longer than 1,048,576 bytes"):
            load_arpa(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), peak  # a few blocks of 1 MiB, not the 24 MB line
    corpus = _corpus(tmp_path / "c")
    err = one_error_line(cli("score", path, corpus / "test.txt"))
    assert f"{path}: line 5: longer than" in err


def test_arpa_line_numbers_across_read_blocks(tmp_path, arpa):
    """Lines are numbered right when the file is read in several blocks (an error far into the file)."""
    lines, uni, bi = _arpa_lines(arpa)
    padding = ["-1.5\tpad%d\t-0.1" % i for i in range(60_000)]  # ~1.2 MB of unigrams before the error
    head = lines[:uni - 1]
    count = next(i for i, ln in enumerate(head) if ln.startswith("ngram 1="))
    head[count] = f"ngram 1={int(head[count].split('=')[1]) + len(padding)}"
    body = padding + [_with_field(lines[uni], 0, "3")] + lines[uni + 1:]
    path = tmp_path / "padded.arpa"
    path.write_text("\n".join(head + [lines[uni - 1]] + body))
    want = len(head) + 1 + len(padding) + 1
    with pytest.raises(ModelError, match=f"line {want}: log10 probability 3 is above 0"):
        load_arpa(path)


# -- 3 and 4. recorded files are re-read through one verified function -------------------------------
@pytest.fixture
def runs(tmp_path) -> dict:
    corpus = _corpus(tmp_path / "c")
    return {"corpus": corpus, "kn3": train(corpus, tmp_path / "runs" / "kn3", "ngram:kn3"),
            "wb3": train(corpus, tmp_path / "runs" / "wb3", "ngram:wb3")}


def _change(path: Path) -> None:
    path.write_text(path.read_text() + "the cat sees the moon\n")


def test_read_recorded_verifies_the_hash_and_names_file_and_run(runs):
    info = record(runs["kn3"])["data"]["test"]
    assert read_recorded(info, runs["kn3"], "test").sha256 == info["sha256"]
    _change(runs["corpus"] / "test.txt")
    with pytest.raises(DataError) as err:
        read_recorded(info, runs["kn3"], "test", "give another file")
    msg = str(err.value)
    assert msg.startswith(f"{info['path']}: changed since {runs['kn3']} recorded its test file (sha256 differs)")
    assert msg.endswith("; give another file")
    (runs["corpus"] / "test.txt").unlink()
    with pytest.raises(DataError, match=re.escape(f"{runs['kn3']}: its test file is not available (")):
        read_recorded(info, runs["kn3"], "test")


def test_check_refuses_a_changed_recorded_test_file(runs):
    ok("check", runs["kn3"], "--quick")
    _change(runs["corpus"] / "test.txt")
    err = one_error_line(cli("check", runs["kn3"], "--quick"))
    assert "test.txt: changed since" in err and str(runs["kn3"]) in err and "TEXTFILE" in err
    ok("check", runs["kn3"], runs["corpus"] / "test.txt", "--quick")  # a file given explicitly is the user's


def test_mix_refuses_changed_valid_or_test_files(runs, tmp_path):
    for split in ("valid", "test"):
        original = (runs["corpus"] / f"{split}.txt").read_text()
        _change(runs["corpus"] / f"{split}.txt")
        out = tmp_path / f"mix-{split}"
        err = one_error_line(cli("mix", runs["kn3"], runs["wb3"], "-o", out))
        assert f"{split}.txt: changed since" in err and "sha256 differs" in err, err
        assert not out.exists()
        (runs["corpus"] / f"{split}.txt").write_text(original)
    mixed = tmp_path / "mix"
    ok("mix", runs["kn3"], runs["wb3"], "-o", mixed)
    assert record(mixed)["data"]["valid"]["sha256"] == record(runs["kn3"])["data"]["valid"]["sha256"]


def test_analyze_and_compare_bleu_refuse_changed_files(runs):
    _change(runs["corpus"] / "test.txt")
    err = one_error_line(cli("analyze", runs["kn3"], runs["wb3"]))
    assert "test.txt: changed since" in err and "--text FILE" in err
    err = one_error_line(cli("compare", runs["kn3"], runs["wb3"], "--bleu", "-q"))
    assert "test.txt: changed since" in err and "BLEU not added" in err
    assert "bleu" not in record(runs["kn3"])["metrics"]


def test_score_of_a_translation_run_refuses_its_changed_test_pair(tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    rng = np.random.default_rng(0)
    words = "a b c d e".split()
    for split, n in (("train", 60), ("valid", 10), ("test", 10)):
        src = [" ".join(rng.choice(words, size=3)) for _ in range(n)]
        (d / f"{split}.src").write_text("".join(s + "\n" for s in src))
        (d / f"{split}.tgt").write_text("".join(s.upper() + "\n" for s in src))
    run = train(d, tmp_path / "tr", "ngram:kn2")
    ok("score", run)
    (d / "test.tgt").write_text((d / "test.tgt").read_text().replace("A", "B", 1))  # same lines, other words
    err = one_error_line(cli("score", run))
    assert "test.src + " in err and "changed since" in err and "--src FILE --tgt FILE" in err


def test_resume_refuses_a_changed_train_file_from_text_and_from_a_token_file(tmp_path):
    corpus = _corpus(tmp_path / "c")
    run = train(corpus, tmp_path / "mlp", "mlp", options={"window": 2, "embed": 8, "hidden": 8},
                train_options={"epochs": 1, "batch_size": 64, "device": "cpu", "threads": 1})
    before = record(run)
    _change(corpus / "train.txt")
    err = one_error_line(cli("train", "--resume", run, "--epochs", "2", "-q"))
    assert "train.txt: changed since" in err and str(run) in err and "cannot resume" in err
    # a token file of the changed text is found by its new hash: still not the recorded file
    ok("encode", "--train", corpus / "train.txt", "--vocab", run / "vocab.json", "-q")
    err = one_error_line(cli("train", "--resume", run, "--epochs", "2", "-q"))
    assert "train.txt: changed since" in err and "cannot resume" in err
    assert record(run) == before


# -- 5. compare refuses runs measured on different validation files ---------------------------------
def test_compare_refuses_a_different_valid_file(tmp_path):
    a = _corpus(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "valid.txt").write_text("".join(ln + "\n" for ln in (a / "valid.txt").read_text().splitlines()[:20]))
    vocab = tmp_path / "vocab.json"
    ok("vocab", "build", a / "train.txt", "-o", vocab, "-q")
    ra = train(a, tmp_path / "ra", "ngram:kn3", vocab=vocab)
    rb = train(b, tmp_path / "rb", "ngram:kn3", vocab=vocab)
    assert record(ra)["data"]["test"]["sha256"] == record(rb)["data"]["test"]["sha256"]  # only valid differs
    err = one_error_line(cli("compare", ra, rb))
    assert f"{ra} and {rb} were not measured the same way: valid file differs" in err

    # a run.json whose valid entry lost its hash can no longer pass for "the same file"
    for run in (ra, rb):
        data = record(run)
        del data["data"]["valid"]["sha256"]
        (run / "run.json").write_text(json.dumps(data))
    err = one_error_line(cli("compare", ra, rb))
    assert "run.json" in err and "data.valid.sha256" in err


# -- 6. run.json: numbers in range and consistent with each other ---------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("records")
    corpus = _corpus(base / "c")
    with open(corpus / "test.txt", "a") as fh:
        fh.write("a zebra likes the ball\n")  # an OOV word: test has oov > 0, valid has none
    kn3 = train(corpus, base / "kn3", "ngram:kn3")
    return {"corpus": corpus, "kn3": kn3, "wb3": train(corpus, base / "wb3", "ngram:wb3")}


def _edited(pristine: dict, tmp_path: Path, edit) -> Path:
    run = tmp_path / "kn3"
    shutil.copytree(pristine["kn3"], run)
    data = record(run)
    edit(data)
    (run / "run.json").write_text(json.dumps(data))
    return run


def _set(path: str, value):
    def edit(data: dict) -> None:
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    return edit


def _lower_perplexity(data: dict) -> None:
    data["metrics"]["test"]["perplexity"] *= 0.9


def _consistent_but_below_one(data: dict) -> None:
    """nll, cross-entropy and perplexity edited together: consistent, but no probability does this."""
    m = data["metrics"]["test"]
    m["nll_nats"] = -m["nll_nats"]
    m["cross_entropy_nats"] = m["nll_nats"] / m["tokens"]
    m["cross_entropy_bits"] = m["cross_entropy_nats"] / math.log(2)
    m["perplexity"] = m["perplexity_excl_oov"] = math.exp(m["cross_entropy_nats"])


EDITS = {
    "lower perplexity": (_lower_perplexity, "metrics.test.perplexity"),
    "perplexity 1e999": (_set("metrics.test.perplexity", 1e999), "metrics.test.perplexity = inf"),
    "perplexity NaN": (_set("metrics.valid.perplexity", float("nan")), "metrics.valid.perplexity = nan"),
    "consistent but below 1": (_consistent_but_below_one, "metrics.test.nll_nats"),
    "nll edited": (_set("metrics.test.nll_nats", 50.0), "metrics.test.cross_entropy_nats"),
    "bits edited": (_set("metrics.test.cross_entropy_bits", 0.1), "metrics.test.cross_entropy_bits"),
    "excl. OOV edited, no OOV": (_set("metrics.valid.perplexity_excl_oov", 1.01),
                                 "metrics.valid.perplexity_excl_oov = 1.01, but the perplexity"),
    "excl. OOV above its bound": (_set("metrics.test.perplexity_excl_oov", 1e6),
                                  "metrics.test.perplexity_excl_oov = 1000000.0 is above"),
    "excl. OOV below 1": (_set("metrics.test.perplexity_excl_oov", 0.5), "metrics.test.perplexity_excl_oov = 0.5"),
    "tokens negative": (_set("metrics.test.tokens", -5), "metrics.test.tokens = -5"),
    "oov negative": (_set("metrics.test.oov", -1), "metrics.test.oov = -1"),
    "oov above tokens": (_set("metrics.test.oov", 10 ** 6), "metrics.test.oov = 1000000 is more than"),
    "tokens unlike data": (_set("data.test.tokens", 7), "but data.test.tokens = 7"),
    "data count negative": (_set("data.valid.sequences", -3), "data.valid.sequences = -3"),
    "sha256 not a hash": (_set("data.test.sha256", "abc"), "data.test.sha256 = 'abc'"),
    "train_seconds 1e999": (_set("train_seconds", 1e999), "train_seconds = inf"),
    "tokens_seen negative": (_set("tokens_seen", -1), "tokens_seen = -1"),
    "bleu 150": (_set("metrics.bleu", {"score": 150.0, "signature": "x", "decoding": "greedy", "lines": 3}),
                 "metrics.bleu.score = 150.0"),
    "best valid ppl 0.5": (_set("fit_info.best_valid_ppl", 0.5), "fit_info.best_valid_ppl = 0.5"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_hand_edited_run_json_is_refused_by_every_loader(pristine, tmp_path, case):
    edit, match = EDITS[case]
    run = _edited(pristine, tmp_path, edit)
    where = f"{run / 'run.json'}: run record is damaged ("
    for args in (("compare", run, pristine["wb3"]), ("compare", pristine["wb3"], run),
                 ("score", run, pristine["corpus"] / "test.txt"), ("check", run, "--quick"),
                 ("analyze", run)):
        err = one_error_line(cli(*args))
        assert where in err and match in err, (args, err)


def test_run_json_with_1e999_written_as_text_is_refused(pristine, tmp_path):
    """JSON has no infinity, but Python's reader turns 1e999 into one: the literal text must be refused."""
    run = tmp_path / "kn3"
    shutil.copytree(pristine["kn3"], run)
    path = run / "run.json"
    text = path.read_text()
    value = repr(record(run)["metrics"]["test"]["perplexity"])
    assert text.count(value) >= 1
    path.write_text(text.replace(f'"perplexity": {value}', '"perplexity": 1e999', 1))
    err = one_error_line(cli("compare", run, pristine["wb3"]))
    assert str(path) in err and "perplexity = inf" in err


def test_every_record_lmkit_writes_passes(tmp_path):
    """n-grams (incl. stupid backoff, MLE's infinite perplexity and a test file with OOVs) and a mixture:
    lmkit's own records are all accepted. (Translation runs with BLEU: the translation test above;
    interrupted and resumed neural runs: tests/test_neural.py and tests/test_reliability_faults.py.)"""
    corpus = _corpus(tmp_path / "c")
    (corpus / "test.txt").write_text((corpus / "test.txt").read_text() + "a zebra likes the ball\n")  # OOV
    runs = [train(corpus, tmp_path / m.replace(":", "-"), m) for m in ("ngram:kn3", "ngram:stupid3", "ngram:mle2")]
    assert record(runs[2])["metrics"]["test"]["perplexity"] is None  # MLE: an unseen event, inf perplexity
    runs.append(api.mix(runs[:1] + [train(corpus, tmp_path / "wb3", "ngram:wb3")], tmp_path / "mix"))
    for run in runs:
        assert api.score(run, corpus / "test.txt").score.tokens > 0
    rows = api.compare(runs)
    assert len(rows) == len(runs)
