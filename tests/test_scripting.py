"""lmkit in shell pipelines (issue 18, point 5), in real child processes: `-` for stdin and stdout, data on
stdout and messages on stderr, exit codes 0/1/2, a reader that goes away (`| head`), `--format` wherever
output is a table, and the pipelines of docs/guide.md's "Scripting" section, run as written."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import REPO, child_env, cli, one_line, run
from test_score_many import write_corpus


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with corpus/ (tiny), runs/kn3 trained from it, and bin/lmkit running this checkout."""
    root = tmp_path_factory.mktemp("scripting")
    write_corpus(root / "corpus")
    shim = root / "bin" / "lmkit"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lmkit "$@"\n')
    shim.chmod(0o755)
    code, out, err = run("train", "--model", "ngram:kn3", "--corpus", "corpus", "-o", "runs/kn3", "-q",
                         "--context", "sentence", "--min-count", "1", cwd=root)  # what `--arpa` trains by default
    assert code == 0, err
    code, out, err = run("export-arpa", "runs/kn3", "-o", "kn3.arpa", "-q", cwd=root)
    assert code == 0 and out == err == "", err
    return root


def sh(work: Path, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`bash -c SCRIPT` in `work` with pipefail, `lmkit` being this checkout."""
    env = child_env(PATH=f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}"], cwd=work, env=env, text=True,
                          capture_output=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "rror" not in proc.stderr, proc.stderr
    return proc.stdout


def arpa_ngrams(text: str) -> dict[int, int]:
    return {int(n): int(c) for n, c in re.findall(r"^ngram (\d+)=(\d+)$", text, re.M)}


# -- '-' for stdout and stdin ----------------------------------------------------------------------------
def test_export_arpa_to_stdout_is_the_file_it_writes(work):
    ok(sh(work, "lmkit export-arpa runs/kn3 -o - | gzip > kn3.arpa.gz"))
    assert not (work / "-").exists()
    piped = gzip.decompress((work / "kn3.arpa.gz").read_bytes()).decode()
    assert piped == (work / "kn3.arpa").read_text() and sorted(arpa_ngrams(piped)) == [1, 2, 3]
    proc = sh(work, "lmkit export-arpa runs/kn3 -o - > out.arpa")  # nothing but the model on stdout
    assert ok(proc) == "" and proc.stderr == "" and (work / "out.arpa").read_text() == piped


def test_train_arpa_to_stdout_like_lmplz_leaves_no_run_folder(work):
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    before = sorted(p.name for p in work.iterdir())
    runs_before = sorted(p.name for p in (work / "runs").iterdir())
    proc = sh(work, "TMPDIR=$PWD/tmp lmkit train --model ngram:kn3 --train - --arpa - < corpus/train.txt > lmplz.arpa")
    ok(proc)  # no valid split needed: an n-gram only reports a valid perplexity with it
    assert sorted(p.name for p in work.iterdir()) == sorted(before + ["lmplz.arpa"])
    assert list(tmp.iterdir()) == []  # the temporary run folder is gone
    assert sorted(p.name for p in (work / "runs").iterdir()) == runs_before  # and none went to runs/
    assert (work / "lmplz.arpa").read_text() == (work / "kn3.arpa").read_text()  # = export-arpa of the same model


def test_arpa_means_sentence_context_and_every_word_unless_asked(work):
    proc = sh(work, "lmkit train --model ngram:kn3 --train - --arpa - < corpus/train.txt > default.arpa")
    ok(proc)
    assert "--arpa: context sentence, min-count 1" in proc.stderr
    stream = sh(work, "lmkit train --model ngram:kn3 --train - --arpa - --context stream --min-count 1 "
                      "< corpus/train.txt > stream.arpa")
    assert "--arpa: context" not in ok(stream) + stream.stderr
    assert (work / "stream.arpa").read_text() != (work / "default.arpa").read_text()
    # export-arpa of a stream-context run says the file will not score like the run
    ok(sh(work, "lmkit train --model ngram:kn3 --corpus corpus --context stream -o runs/kn3-stream -q"))
    proc = sh(work, "lmkit export-arpa runs/kn3-stream -o - > s.arpa")
    assert proc.returncode == 0 and "trained in stream context" in proc.stderr
    assert "stream context" not in sh(work, "lmkit export-arpa runs/kn3 -o - > k.arpa").stderr


def test_train_arpa_with_an_output_folder_keeps_the_run(work):
    proc = sh(work, "lmkit train --model ngram:kn3 --train - --arpa - -o runs/kept < corpus/train.txt | gzip > kept.gz")
    ok(proc)
    assert (work / "runs" / "kept" / "run.json").is_file()
    assert "run folder: runs/kept" in proc.stderr
    assert gzip.decompress((work / "kept.gz").read_bytes()).decode() == (work / "kn3.arpa").read_text()
    proc = sh(work, "lmkit train --model ngram:kn3 --corpus corpus --arpa file.arpa -o runs/kept2 -q")
    assert ok(proc) == "runs/kept2\n" and (work / "file.arpa").read_text() == (work / "kn3.arpa").read_text()


def test_train_arpa_refuses_what_has_no_arpa_form_before_reading(work):
    for model, fragment in (("lstm", "not one"), ("ngram:stupid3", "no back-off form")):
        proc = sh(work, f"lmkit train --model {model} --train - --arpa - < /dev/null")
        assert proc.returncode == 2 and proc.stdout == ""
        one_line(proc.stderr, "--arpa", fragment)


def test_vocab_build_and_plot_write_stdout(work):
    vocab = json.loads(ok(sh(work, "lmkit vocab build corpus/train.txt -o - -q")))
    assert vocab["kind"] == "lmkit-vocab" and vocab == json.loads(ok(sh(work, "lmkit vocab build corpus/train.txt")))
    pytest.importorskip("matplotlib")
    proc = sh(work, "lmkit plot runs/kn3 -o - > curve.png")
    assert ok(proc) == "" and proc.stderr == ""
    assert (work / "curve.png").read_bytes().startswith(b"\x89PNG\r\n")
    assert not (work / "-").exists()


def test_score_reads_stdin(work):
    piped = json.loads(ok(sh(work, "lmkit score runs/kn3 - --format json < corpus/test.txt")))
    named = json.loads(ok(sh(work, "lmkit score runs/kn3 corpus/test.txt --format json")))
    assert piped["file"] == "<stdin>" and piped["sha256"] == named["sha256"]
    assert piped["perplexity"] == named["perplexity"] and piped["tokens"] == named["tokens"]


# -- exit codes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, code, fragment", [
    (["score", "runs/kn3", "corpus/test.txt"], 0, None),
    (["score", "runs/kn3", "corpus/missing.txt"], 1, "missing.txt"),
    (["score", "runs/none", "corpus/test.txt"], 1, "runs/none"),
    (["score", "runs/kn3", "corpus/test.txt", "--format", "yaml"], 2, "--format"),
    (["score", "runs/kn3", "corpus/test.txt", "--no-such-flag"], 2, "--no-such-flag"),
    (["export-arpa", "runs/kn3"], 2, "-o"),
    (["train", "--model", "lstm", "--corpus", "corpus", "--arpa", "-"], 2, "--arpa"),
])
def test_exit_codes(work, args, code, fragment):
    exit_code, out, err = run(*args, cwd=work)
    assert exit_code == code, err
    if fragment is None:
        assert err == "" and out
    else:
        one_line(err, fragment)
        assert out == ""


# -- a reader that goes away -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    "lmkit score runs/kn3 big.txt --per-token | head -1",
    "lmkit score runs/kn3 corpus/train.txt --per-token --format table | head -1",
    "lmkit score runs/kn3 corpus/test.txt --per-token | true",
    "lmkit score runs/kn3 corpus/test.txt | true",
    "lmkit vocab show runs/kn3/vocab.json | head -1",
    "lmkit vocab show runs/kn3/vocab.json --format table | true",
    "lmkit export-arpa runs/kn3 -o - | head -1",
])
def test_a_closed_pipe_ends_quietly(work, command):
    big = work / "big.txt"
    if not big.exists():
        big.write_text((work / "corpus" / "train.txt").read_text() * 10)  # more than a pipe holds
    proc = sh(work, f"{command}\necho \"status ${{PIPESTATUS[0]}}\" >&2")
    assert proc.stderr == "status 0\n", proc.stderr


# -- --format on every table ---------------------------------------------------------------------------------
TABLE_COMMANDS = [
    ["models"],
    ["vocab", "show", "runs/kn3/vocab.json"],
    ["score", "runs/kn3", "corpus/test.txt"],
    ["score", "runs/kn3", "runs/kn3", "--text", "corpus/test.txt"],
    ["score", "runs/kn3", "corpus/test.txt", "--per-line"],
    ["check", "runs/kn3", "--quick"],
    ["compare", "runs/kn3"],
    ["analyze", "runs/kn3", "--by", "length"],
    ["corpus", "list"],
    ["verify", "--list"],
    ["generate", "runs/kn3", "--prompt", "the", "--max-tokens", "3"],
    ["bleu", "runs/kn3", "corpus/test.txt"],
]


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_table_has_json_jsonl_and_tsv(work, args, monkeypatch):
    monkeypatch.chdir(work)
    for fmt in ("json", "jsonl", "tsv"):
        result = cli(*args, "--format", fmt)
        assert result.exit_code == 0, (args, fmt, result.stderr)
        out = result.stdout
        if fmt == "json":
            assert isinstance(json.loads(out), (dict, list))
        elif fmt == "jsonl":
            assert all(isinstance(json.loads(line), dict) for line in out.splitlines()) and out
        else:
            rows = list(csv.reader(io.StringIO(out), delimiter="\t"))
            assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows), out


# -- the guide's pipelines, as written ---------------------------------------------------------------------------
def guide_pipelines() -> list[str]:
    text = (REPO / "docs" / "guide.md").read_text(encoding="utf-8")
    section = text.split("\n## Scripting\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_the_guide_has_three_pipelines():
    assert len(guide_pipelines()) == 3


@pytest.fixture()
def fresh(tmp_path):
    """An empty folder with only corpus/ and bin/lmkit, as the guide's pipelines assume."""
    write_corpus(tmp_path / "corpus")
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "lmkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lmkit "$@"\n')
    shim.chmod(0o755)
    return tmp_path


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="the guide's pipelines use jq")


@needs_jq
def test_guide_pipeline_lmplz(fresh):
    out = ok(sh(fresh, guide_pipelines()[0]))
    ppl = float(out)
    arpa = gzip.decompress((fresh / "kn5.arpa.gz").read_bytes()).decode()
    assert arpa.startswith("\\data\\") and max(arpa_ngrams(arpa)) == 5
    assert 1 < ppl < 100 and sorted(p.name for p in fresh.iterdir()) == ["bin", "corpus", "kn5.arpa.gz"]


@needs_jq
def test_guide_pipeline_several_runs_and_files(fresh):
    out = ok(sh(fresh, guide_pipelines()[1])).splitlines()
    assert out[:2] == ["runs/kn3", "runs/kn5"]  # what `lmkit train` prints
    rows = [line.split("\t") for line in out[2:]]
    assert [(m, f) for m, f, _ in rows] == [("ngram:kn3", "corpus/valid.txt"), ("ngram:kn3", "corpus/test.txt"),
                                            ("ngram:kn5", "corpus/valid.txt"), ("ngram:kn5", "corpus/test.txt")]
    assert all(float(p) > 1 for _, _, p in rows)


@needs_jq
def test_guide_pipeline_hardest_lines(fresh):
    ok(sh(fresh, "\n".join(guide_pipelines()[1].splitlines()[:3])))  # the runs it reads
    out = ok(sh(fresh, guide_pipelines()[2])).splitlines()
    per_line = json.loads(ok(sh(fresh, "lmkit score runs/kn5 corpus/test.txt --per-line --format json")))
    hardest = sorted(per_line, key=lambda r: -r["perplexity"])[:3]
    assert [line.split("\t")[0] for line in out] == [str(r["line"]) for r in hardest]
