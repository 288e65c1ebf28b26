"""Output for people (issue 18, point 8): tables that fit 80 columns without splitting a number, `--wide`
for every column, sacrebleu's breakdown beside `lmkit bleu`'s score, `vocab show` in TSV, `--help`
without typer's artifacts, and tab completion for bash, zsh and fish.

Terminal widths are set with COLUMNS in a child process (rich reads it when stdout is not a terminal);
the reference for "every number whole" is the same command with --wide, in this process."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
from rich.cells import cell_len
from typer.main import get_command

from clitools import child_env, cli, run, train
from lmkit import api
from lmkit.cli import app
from lmkit.data.vocab import Vocab
from lmkit.render import TableColumn, fit_columns, water_fill, wrap_header, write_record, write_rows

NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def numbers(text: str) -> set[str]:
    """Every whole word of a rendered table that is a number (`2,594,998`, `7.383`, `1.3e-12`)."""
    words = (w.strip("()[],;|") for line in text.splitlines()
             for w in re.sub(r"[│┃┏┓┗┛┡┩└┘━─┳┻╇╈┼╋┣┫├┤]", " ", line).split())
    return {w for w in words if NUMBER.fullmatch(w)}


def headers(text: str) -> list[str]:
    """The column headers of a rendered table, each joined from the lines it wraps over."""
    lines = [line.strip("┃").split("┃") for line in text.splitlines() if line.startswith("┃")]
    return [" ".join(" ".join(cell.strip() for cell in column).split()) for column in zip(*lines)]


def fits(text: str, width: int = 80) -> None:
    wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert not wide, f"{len(wide)} lines longer than {width} columns:\n" + "\n".join(wide)


def narrow(runs: dict, *args) -> str:
    """`lmkit ARGS --format table` in a child process on an 80-column terminal, in the runs' folder."""
    code, out, err = run(*args, "--format", "table", cwd=runs["root"], env=child_env(COLUMNS="80"))
    assert code == 0, err
    return out


def wide(runs: dict, monkeypatch, *args, columns: str = "1000") -> str:
    """The same with --wide, in this process on a 1000-column terminal: the reference of whole numbers."""
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.chdir(runs["root"])
    r = cli(*args, "--format", "table", "--wide")
    assert r.exit_code == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three n-gram runs on one tiny corpus (comparable: same protocol, vocabulary and test file), named by
    paths relative to `root` (a long path is a word that may fold, tested on its own below)."""
    from conftest import TINY_TEST, TINY_TRAIN, TINY_VALID

    root = tmp_path_factory.mktemp("output")
    corpus = root / "tiny"
    corpus.mkdir()
    for name, text in (("train", TINY_TRAIN), ("valid", TINY_VALID), ("test", TINY_TEST)):
        (corpus / f"{name}.txt").write_text(text)
    found = {"root": root, "corpus": Path("tiny"), "test": Path("tiny/test.txt"), "valid": Path("tiny/valid.txt")}
    for model in ("ngram:kn2", "ngram:kn3", "ngram:laplace2"):
        found[model] = Path(model.replace(":", "-"))
        train(corpus, root / found[model], model, min_count=1)
    return found


# -- tables at 80 columns -----------------------------------------------------------------------------
TABLES = {
    "compare": lambda r: ["compare", r["ngram:kn2"], r["ngram:kn3"], r["ngram:laplace2"]],
    "score": lambda r: ["score", r["ngram:kn3"], r["test"]],
    "score --per-line": lambda r: ["score", r["ngram:kn3"], r["test"], "--per-line"],
    "score, several": lambda r: ["score", r["ngram:kn2"], r["ngram:kn3"], "--text", r["test"], r["valid"]],
    "models": lambda r: ["models"],
    "check": lambda r: ["check", r["ngram:kn3"], r["test"], "--quick"],
}


@pytest.mark.parametrize("name", TABLES)
def test_tables_fit_80_columns_and_keep_every_number_whole(name, runs, monkeypatch):
    args = TABLES[name](runs)
    shown, everything = narrow(runs, *args), wide(runs, monkeypatch, *args)
    fits(shown)
    shown = re.sub(r"\d+ more columns?: .*", "", shown)  # the caption's count is no cell
    assert numbers(shown) and numbers(shown) <= numbers(everything), numbers(shown) - numbers(everything)


def test_compare_leaves_out_columns_by_name_and_wide_shows_them(runs, monkeypatch):
    args = TABLES["compare"](runs)
    shown, everything = narrow(runs, *args), wide(runs, monkeypatch, *args, columns="80")
    assert max(cell_len(line) for line in everything.splitlines()) > 80  # --wide: wider than the terminal
    caption = re.search(r"(\d+) more columns?: (.*?) \(--wide shows them\)", " ".join(shown.split()))
    assert caption, shown
    hidden = caption.group(2).split(", ")
    assert len(hidden) == int(caption.group(1)) and "score tok/s" in hidden  # the rightmost goes first
    assert set(hidden) <= set(headers(everything)) and "more column" not in everything
    rows = json.loads(cli(*args, "--format", "json").stdout)
    for row in rows:  # the quality columns stay: every test perplexity is in the narrow table, whole
        assert f"{row['test_ppl']:,.2f}" in numbers(shown)
    intervals = narrow(runs, *args, "--bootstrap", "50")  # asked for: the intervals stay, other columns go
    assert {"test ppl", "ppl lo", "ppl hi", "p worse"} <= set(headers(intervals))
    assert "params" not in headers(intervals)


def test_curve_table_fits_80_columns(runs, tmp_path, monkeypatch):
    args = ["curve", "--corpus", runs["root"] / runs["corpus"], "--models", "ngram:kn2,ngram:laplace3",
            "--fractions", "0.5,1", "--min-count", "1", "-q"]
    shown = narrow(runs, *args, "--runs-dir", tmp_path / "narrow")
    fits(shown)
    assert "learning curve" in shown and "laplace3" in shown
    # numbers whole: the same rows drawn as the command draws them, at 80 columns and --wide
    from lmkit.curve import table_view

    rows = api.curve(runs["root"] / runs["corpus"], ["ngram:kn2", "ngram:laplace3"], "0.5,1", min_count=1,
                     runs_dir=tmp_path / "r")
    display, columns = table_view(rows)
    drawn = {}
    for width, is_wide in (("80", False), ("1000", True)):
        monkeypatch.setenv("COLUMNS", width)
        out = io.StringIO()
        write_rows(display, "table", columns=columns, out=out, wide=is_wide)
        drawn[is_wide] = out.getvalue()
    fits(drawn[False])
    assert numbers(drawn[False]) <= numbers(drawn[True])


BIG = [{"#": i + 1, "name": f"row {'abc'[i]}", **{f"column {'ABCDEFGHIJ'[c]}": 10 ** (6 + c % 4) * 1.2345 + i
                                                 for c in range(10)}, "note": "text, kept"} for i in range(3)]


def test_a_table_too_wide_for_the_terminal_drops_numeric_columns_from_the_right(monkeypatch):
    """Ten columns of numbers 8-12 characters long cannot fit 80 columns: numeric columns go from the right,
    those with a marked best value last, and the caption names them; no number is cut."""
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    write_rows(BIG, "table", out=out, highlight={"column J": 0}, wide=False)
    text = out.getvalue()
    fits(text)
    whole = {f"{v:.1f}" for row in BIG for k, v in row.items() if k.startswith("column")} | {"1", "2", "3"}
    cells = numbers(text[: text.rindex("┘")])  # the caption's count left out
    assert len(cells) >= 6 and cells <= whole  # only whole cells
    shown = headers(text)
    assert "column J" in shown and "column A" in shown and "column I" not in shown  # kept: best, first
    assert "note" in shown  # a text column wraps instead
    caption = " ".join(text[text.rindex("┘"):].split())
    assert caption.endswith("(--wide shows them)") and "column I" in caption  # named in the caption
    out = io.StringIO()
    write_rows(BIG, "table", out=out)  # a command without --wide points at tsv instead
    assert " ".join(out.getvalue().split()).endswith("(--format tsv shows them)")
    monkeypatch.setenv("COLUMNS", "24")  # the first column stays longest, even past the best one
    out = io.StringIO()
    write_rows([{k: r[k] for k in ("#", "name", "column J")} for r in BIG], "table", out=out, highlight={"column J": 0})
    assert headers(out.getvalue()) == ["#", "name"], out.getvalue()


def test_a_long_path_folds_before_a_column_of_numbers_is_left_out(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rows = [{"file": "/data/" + "corpora/" * 7 + f"test{i}.txt", "tokens": 1234567 + i, "oov": 7654321,
             "perplexity": 123.456789} for i in range(2)]
    out = io.StringIO()
    write_rows(rows, "table", out=out, wide=False)
    text = out.getvalue()
    fits(text)
    assert "more column" not in text and {"1234567", "1234568", "7654321", "123.457"} <= numbers(text)


def test_headers_break_at_spaces_and_after_slashes_and_widths_are_shared_fairly():
    assert wrap_header("bits/token", 6) == "bits/\ntoken" and wrap_header("score tok/s", 5) == "score\ntok/s"
    assert wrap_header("valid ppl", 20) == "valid ppl"
    assert TableColumn("score tok/s", ["12", "3"]).minimum == 5 and TableColumn("a b", ["x"]).natural == 3
    # floors 2, 2, 2 towards 3, 10, 4 in 12 cells: the smallest needs first, the rest to the widest
    assert water_fill([2, 2, 2], [3, 10, 4], 12) == [3, 5, 4]
    numeric = [TableColumn(h, ["123456"]) for h in ("first", "a", "b", "c", "d")]
    shown, _ = fit_columns(numeric, 30, keep=["b", "a"])  # room for three: the unnamed go first
    assert [c.header for c in shown] == ["first", "a", "b"]
    shown, _ = fit_columns(numeric, 21, keep=["b", "a"])  # room for two: then `keep`'s last
    assert [c.header for c in shown] == ["first", "b"]
    shown, widths = fit_columns([TableColumn("n", ["1.5"]), TableColumn("model", ["ngram:kn5"])], 80)
    assert widths == [3, 9]  # room for every cell on one line: natural widths


def test_a_record_too_wide_folds_text_but_never_a_number(monkeypatch):
    monkeypatch.setenv("COLUMNS", "24")
    out = io.StringIO()
    record = {"perplexity": 123456789.25, "path": "a/" * 40 + "file.txt", "count": 9876543210}
    write_record(record, "table", out=out)
    text = out.getvalue()
    fits(text, 24)
    assert {"123456789.2", "9876543210"} <= numbers(text)


# -- bleu ---------------------------------------------------------------------------------------------
def test_bleu_prints_sacrebleus_breakdown_and_signature(runs):
    """The first line is sacrebleu's own rendering of its BLEUScore (score, 1-4-gram precisions, brevity
    penalty, length ratio, hypothesis and reference lengths), recomputed here from the same continuations."""
    run_dir, text = runs["root"] / runs["ngram:kn2"], runs["root"] / runs["corpus"] / "train.txt"
    report = api.bleu(run_dir, text)
    res = report.result
    own = sacrebleu.metrics.BLEU(force=True).corpus_score(res.hypotheses, [res.references])
    code, out, err = run("bleu", run_dir, text)
    assert code == 0, err
    first, counts, signature = out.splitlines()
    assert first == str(own)
    assert res.short_lines == 1  # `the cat ate`: 3 tokens
    assert counts == (f"{res.lines} lines scored, 1 left out (too short; translation: a blank side); {report.model} "
                      f"on {text}")
    assert signature == res.signature and signature.startswith("nrefs:1|")
    code, out, err = run("bleu", run_dir, text, "--format", "json")
    data = json.loads(out)
    assert data["precisions"] == pytest.approx(own.precisions) and len(data["precisions"]) == 4
    assert (data["brevity_penalty"], data["hyp_len"], data["ref_len"]) == (pytest.approx(own.bp), own.sys_len,
                                                                            own.ref_len)
    assert data["signature"] == res.signature


# -- vocab show ---------------------------------------------------------------------------------------
def test_vocab_show_tsv_lists_the_most_frequent_tokens(runs, tmp_path):
    vocab = tmp_path / "v.json"
    train_text = runs["root"] / runs["corpus"] / "train.txt"
    assert cli("vocab", "build", train_text, "--min-count", "1", "-o", vocab, "-q").exit_code == 0
    counts = Counter(train_text.read_text().split())
    expected = sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))  # the cat 3 ... ties alphabetical
    code, out, err = run("vocab", "show", vocab, "--top", "3")  # a pipe: TSV without asking
    assert code == 0, err
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header == ["id", "token", "count", "share"]
    assert [(t, int(c)) for _, t, c, _ in rows] == expected[:3]
    report = json.loads(cli("vocab", "show", vocab, "--top", "3", "--format", "json").stdout)
    assert [float(s) for *_, s in rows] == pytest.approx([c / report["train_tokens"] for _, c in expected[:3]],
                                                         rel=1e-5)
    everything = cli("vocab", "show", vocab, "--top", "1000", "--format", "tsv").stdout.splitlines()[1:]
    assert [(r.split("\t")[1], int(r.split("\t")[2])) for r in everything] == expected  # --top past the end: all
    assert cli("vocab", "show", vocab, "--top", "0", "--format", "csv").stdout.splitlines() == ["id,token,count,share"]
    top = json.loads(cli("vocab", "show", vocab, "--top", "2", "--format", "json").stdout)["top"]
    assert [t["token"] for t in top] == [t for t, _ in expected[:2]]


def test_most_frequent_orders_by_count_not_by_id():
    v = Vocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b", "c", "d"], [0, 7, 0, 0, 1, 5, 3, 5])
    assert v.most_frequent() == [5, 7, 6, 4] and v.most_frequent(2) == [5, 7]  # ties: lower id first
    with_sep = Vocab(["<pad>", "<unk>", "<s>", "</s>", "<sep>", "x", "y"], [0, 0, 0, 0, 9, 1, 2])
    assert with_sep.most_frequent() == [6, 5]  # <sep> is no token of the text


# -- help ---------------------------------------------------------------------------------------------
def commands():
    """(path, click command) of every command and group, the root first."""
    found = []

    def walk(cmd, path):
        found.append((path, cmd))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


ARTIFACT = re.compile(r"<(?:bool|str|int|float|path|Path|text|integer|list\[[^\]]*\])>")


def test_help_has_no_typer_artifacts_and_shows_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    for path, cmd in commands():
        r = cli(*path, "--help")
        assert r.exit_code == 0, (path, r.stderr)
        text = r.stdout
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert not ARTIFACT.search(text) and "{" not in usage, (path, ARTIFACT.findall(text), usage)
        assert "../shared/corpora" not in text, path  # examples a fresh clone can follow: `--corpus ptb`
        for p in cmd.params:
            default = p.default
            if p.param_type_name != "option" or default in (None, False, (), []) or p.hidden:
                continue
            shown = default.value if hasattr(default, "value") else default
            assert f"[default: {shown}]" in " ".join(text.split()), (path, p.name, shown)
        for name, sub in getattr(cmd, "commands", {}).items():  # the group's list: one sentence each
            assert sub.short_help and "\n" not in sub.short_help and not re.search(r"\.\s+[A-Z]", sub.short_help), (
                name, sub.short_help)
    code, out, err = run("score", "--help", env=child_env(COLUMNS="100"))
    assert code == 0 and "Usage: lmkit score [OPTIONS]" in out and not ARTIFACT.search(out)


# -- completion ---------------------------------------------------------------------------------------
SCRIPTS = {"bash": "complete -o default -F _lmkit_completion lmkit", "zsh": "#compdef lmkit",
           "fish": "complete --command lmkit"}
INSTALLED = {"bash": ".bash_completions/lmkit.sh", "zsh": ".zfunc/_lmkit",
             "fish": ".config/fish/completions/lmkit.fish"}


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_show_and_install_completion(shell, tmp_path):
    code, out, err = run("--show-completion", shell, env=child_env(SHELL="/bin/sh"))  # a name beats $SHELL
    assert code == 0 and SCRIPTS[shell] in out and f"_LMKIT_COMPLETE=complete_{shell}" in out, err
    code, guessed, err = run("--show-completion", env=child_env(SHELL=f"/usr/local/bin/{shell}"))
    assert code == 0 and guessed == out, err
    code, printed, err = run("--install-completion", shell, env=child_env(HOME=str(tmp_path)))
    assert code == 0 and printed == "" and shell in err, err
    assert (tmp_path / INSTALLED[shell]).read_text().strip() == out.strip()


def test_completion_scripts_complete_commands_and_options(tmp_path):
    """bash runs the printed script against a `lmkit` on PATH; zsh and fish are asked as their scripts ask."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lmkit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lmkit "$@"\n')
    (bin_dir / "lmkit").chmod(0o755)
    env = child_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = subprocess.run(["lmkit", "--show-completion", "bash"], env=env, capture_output=True, text=True).stdout
    probe = f'{script}\nCOMP_WORDS=(lmkit vocab s); COMP_CWORD=2; _lmkit_completion lmkit; echo "${{COMPREPLY[@]}}"'
    p = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["show"], p.stderr
    p = subprocess.run(["lmkit"], env={**env, "_LMKIT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "lmkit tr"},
                       capture_output=True, text=True, timeout=60)
    assert '"train"' in p.stdout and "export-arpa" not in p.stdout, p.stdout + p.stderr
    p = subprocess.run(["lmkit"], env={**env, "_LMKIT_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION":
                                       "get-args", "_TYPER_COMPLETE_ARGS": "lmkit compare --wi"},
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.split("\t")[0] == "--wide", p.stdout + p.stderr


def test_completion_for_an_unknown_shell_is_one_usage_error():
    code, out, err = run("--show-completion", "tcsh")
    assert code == 2 and out == "" and err.count("\n") == 1 and "'tcsh' is not one of bash, zsh, fish" in err
