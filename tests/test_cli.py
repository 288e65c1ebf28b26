"""The CLI end to end through typer's runner: parse what it prints, check exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmkit import api
from lmkit.cli import app

runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def ok(*args: str, input: str | None = None) -> str:
    r = run(*args, input=input)
    assert r.exit_code == 0, f"exit {r.exit_code}: {r.stderr}\n{r.stdout}"
    return r.stdout


def fails(*args: str, code: int = 1, match: str = "", input: str | None = None) -> str:
    r = run(*args, input=input)
    assert r.exit_code == code, f"expected exit {code}, got {r.exit_code}: {r.stderr}{r.stdout}"
    err = r.stderr
    assert "Traceback" not in err and "Traceback" not in r.stdout
    assert match in err, err
    return err


@pytest.fixture
def kn_run(tiny_corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "runs" / "kn3"
    # KenLM's conventions (sentence context, every word kept): what an ARPA file and its OOV count assume
    printed = ok("train", "--model", "ngram:kn3", "--corpus", tiny_corpus, "--context", "sentence", "--min-count", "1",
                 "-o", out, "-q")
    assert printed.strip() == str(out)  # train prints only the run folder
    return out


def test_help_lists_commands():
    out = ok("--help")
    for cmd in ("train", "score", "export-arpa", "vocab"):
        assert cmd in out
    assert ok("--version").startswith("lmkit ")


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from lmkit.cli import app; from lmkit import api; "
            "import lmkit.models.ngram.model, lmkit.models.ngram.arpa; "
            "bad = [m for m in ('torch', 'nltk', 'sacrebleu') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vocab_build_and_show(tiny_corpus, tmp_path):
    v = tmp_path / "vocab.json"
    ok("vocab", "build", tiny_corpus / "train.txt", "--min-count", "2", "-o", v)
    data = json.loads(v.read_text())
    assert data["tokens"][:4] == ["<pad>", "<unk>", "<s>", "</s>"] and data["min_count"] == 2
    report = json.loads(ok("vocab", "show", v, "--coverage", tiny_corpus / "test.txt", "--format", "json"))
    # test.txt: 9 tokens; 'log' (count 1 in train) and 'bird' (unseen) are OOV at min-count 2
    assert report["coverage"]["tokens"] == 9 and report["coverage"]["oov_tokens"] == 2
    assert report["size"] == data["size"]


def test_train_score_summary_matches_library(kn_run, tiny_corpus):
    out = json.loads(ok("score", kn_run, tiny_corpus / "test.txt", "--format", "json"))
    lib = api.score(kn_run, tiny_corpus / "test.txt").summary()
    assert out["perplexity"] == pytest.approx(lib["perplexity"], rel=1e-12)
    # test.txt has 2 lines, 9 words -> 11 scored tokens incl. two </s>; 'bird' is the only OOV
    assert out["tokens"] == 11 and out["oov"] == 1 and out["sequences"] == 2
    assert out["model"] == "ngram:kn3" and out["protocol"]["context"] == "sentence"
    rec = json.loads((kn_run / "run.json").read_text())
    assert rec["metrics"]["test"]["perplexity"] == pytest.approx(out["perplexity"], rel=1e-12)
    assert rec["schema"] == 1 and rec["vocab_id"] and rec["data"]["test"]["sha256"] == out["sha256"]


def test_score_stdin_per_line_jsonl(kn_run, tiny_corpus):
    text = (tiny_corpus / "test.txt").read_text()
    lines = ok("score", kn_run, "-", "--per-line", "--format", "jsonl", input=text).splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["line"] for r in records] == [1, 2]
    total = json.loads(ok("score", kn_run, tiny_corpus / "test.txt", "--format", "json"))
    assert sum(r["logprob"] for r in records) == pytest.approx(-total["nll_nats"], rel=1e-12)
    assert records[1]["oov"] == 1 and records[0]["tokens"] == 7


def test_score_per_token_tsv(kn_run, tiny_corpus):
    out = ok("score", kn_run, tiny_corpus / "test.txt", "--per-token", "--format", "tsv")
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == ["line", "position", "token", "logprob", "oov"]
    assert [r[2] for r in rows[1:8]] == ["the", "cat", "sat", "on", "the", "log", "</s>"]
    assert rows[-2][2] == "sat" and rows[9][2] == "bird" and rows[9][4] == "true"


def test_formats_parse(kn_run, tiny_corpus):
    import csv
    import io

    out = ok("score", kn_run, tiny_corpus / "test.txt", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert float(rows[0]["perplexity"]) > 1
    md = ok("score", kn_run, tiny_corpus / "test.txt", "--per-line", "--format", "markdown")
    assert md.splitlines()[1].startswith("|") and "---" in md.splitlines()[1]
    fails("score", kn_run, tiny_corpus / "test.txt", "--format", "xml", code=2)


def test_output_folder_is_not_overwritten(kn_run, tiny_corpus):
    fails("train", "--model", "ngram:kn3", "--corpus", tiny_corpus, "-o", kn_run, code=2, match="--force")
    ok("train", "--model", "ngram:laplace2", "--corpus", tiny_corpus, "-o", kn_run, "--force", "-q")
    assert json.loads((kn_run / "run.json").read_text())["label"] == "ngram:laplace2"


def test_default_run_dir(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_RUNS", str(tmp_path / "myruns"))
    out = ok("train", "--model", "ngram:wb2", "--corpus", tiny_corpus, "-q").strip()
    assert Path(out).parent == tmp_path / "myruns" and Path(out).name.startswith("ngram-wb2-")


def test_bad_inputs_one_line_errors(tiny_corpus, tmp_path, kn_run):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    fails("score", kn_run, empty, match="error: ")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x00\x01\x02abc")
    fails("score", kn_run, binary, match="binary")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    err = fails("score", kn_run, bad, match="line 2: invalid UTF-8")
    assert err.count("\n") == 1  # one line
    nosplit = tmp_path / "nosplit"
    nosplit.mkdir()
    (nosplit / "train.txt").write_text("a b a b\n")
    fails("train", "--corpus", nosplit, "-o", tmp_path / "r1", match="no valid split")
    fails("train", "--model", "ngram", "--order", "0", "--corpus", tiny_corpus, code=2, match="order")
    fails("train", "--model", "ngram:kn99", "--corpus", tiny_corpus, code=2, match="order")
    fails("train", "--model", "ngram:addk3", "--k", "-1", "--corpus", tiny_corpus, code=2, match="k")
    fails("train", "--model", "ngram:kn3", "--order", "4", "--corpus", tiny_corpus, code=2, match="contradicts")
    fails("train", "--model", "bogus", "--corpus", tiny_corpus, code=2, match="unknown model")
    fails("train", "--set", "nonsense=1", "--corpus", tiny_corpus, code=2, match="valid keys")
    fails("train", "--bogus-flag", code=2)
    assert not (tmp_path / "r1").exists()


def test_char_vocab_with_word_model_is_refused(tiny_corpus, tmp_path):
    v = tmp_path / "char.json"
    ok("vocab", "build", tiny_corpus / "train.txt", "--level", "char", "-o", v)
    fails("train", "--vocab", v, "--level", "word", "--corpus", tiny_corpus, "-o", tmp_path / "r",
          code=2, match="level=char")
    assert not (tmp_path / "r").exists()


def test_damaged_run_folders(kn_run, tiny_corpus, tmp_path):
    import shutil

    test = tiny_corpus / "test.txt"
    broken = tmp_path / "broken"
    shutil.copytree(kn_run, broken)
    (broken / "run.json").write_text((kn_run / "run.json").read_text()[:50])
    fails("score", broken, test, match="damaged run record")
    shutil.rmtree(broken)
    shutil.copytree(kn_run, broken)
    model_file = next(p for p in broken.iterdir() if p.name.startswith("model"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    fails("score", broken, test, match="error: ")
    shutil.rmtree(broken)
    shutil.copytree(kn_run, broken)
    (broken / "vocab.json").unlink()
    fails("score", broken, test, match="vocab")
    fails("score", tmp_path / "nothing", test, match="no such run")


def test_all_oov_file_is_reported(kn_run, tmp_path):
    f = tmp_path / "oov.txt"
    f.write_text("zebra yak\n")
    out = json.loads(ok("score", kn_run, f, "--format", "json"))
    assert out["oov"] == 2 and out["tokens"] == 3 and out["perplexity"] > 1
    assert out["perplexity_excl_oov"] is not None  # </s> is in vocabulary
    only = tmp_path / "oov2.txt"
    only.write_text("zebra\n")
    lib = api.score(kn_run, only).summary()
    assert lib["oov"] == 1


def test_mle_infinite_perplexity_is_reported(tiny_corpus, tmp_path):
    out = tmp_path / "mle"
    ok("train", "--model", "ngram:mle2", "--corpus", tiny_corpus, "-o", out, "-q")
    rec = json.loads(ok("score", out, tiny_corpus / "test.txt", "--format", "json"))
    assert rec["perplexity"] is None and rec["finite"] is False


def test_export_arpa_and_score_it(kn_run, tiny_corpus, tmp_path):
    arpa = tmp_path / "kn3.arpa"
    ok("export-arpa", kn_run, "-o", arpa, "-q")
    assert arpa.read_text().startswith("\\data\\")
    a = json.loads(ok("score", arpa, tiny_corpus / "test.txt", "--format", "json"))
    b = json.loads(ok("score", kn_run, tiny_corpus / "test.txt", "--format", "json"))
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)
    lap = tmp_path / "lap"
    ok("train", "--model", "ngram:laplace2", "--corpus", tiny_corpus, "-o", lap, "-q")
    fails("export-arpa", lap, "-o", tmp_path / "lap.arpa", code=2, match="laplace")
    assert not (tmp_path / "lap.arpa").exists()
    trunc = tmp_path / "trunc.arpa"
    trunc.write_text(arpa.read_text()[: len(arpa.read_text()) // 2])
    fails("score", trunc, tiny_corpus / "test.txt", match="trunc.arpa")


def test_run_folders_get_the_permissions_of_a_plain_write(tiny_corpus, tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (private 0600/0700); the result must follow the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "kn"
        r = CliRunner().invoke(app, ["train", "--model", "ngram:kn3", "--corpus", str(tiny_corpus), "-o", str(out),
                                     "-q"])
        assert r.exit_code == 0, r.stderr
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
