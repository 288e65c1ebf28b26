"""`lmkit score` over several runs and files (one row per pair), `--device auto` by default, and `compare` /
`plot` over a runs folder that also holds a lineup folder (issue 18, point 6)."""

from __future__ import annotations

import json
import random

import pytest

from clitools import cli, one_error_line, train

WORDS = "the a cat dog sat on mat ran fast slow big small red blue".split()


def write_corpus(folder, seed: int = 0):
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 200), ("valid", 30), ("test", 30)):
        lines = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 9))) for _ in range(n)]
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A corpus and two n-gram runs of it: (corpus folder, kn2 run, kn3 run)."""
    root = tmp_path_factory.mktemp("score_many")
    corpus = write_corpus(root / "corpus")
    return corpus, train(corpus, root / "runs" / "kn2", "ngram:kn2"), train(corpus, root / "runs" / "kn3", "ngram:kn3")


def single(run, text) -> dict:
    result = cli("score", run, text, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def jsonl(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_several_runs_and_files_give_one_row_per_pair_in_order(runs):
    corpus, kn2, kn3 = runs
    valid, test = corpus / "valid.txt", corpus / "test.txt"
    rows = jsonl(cli("score", kn2, kn3, "--text", valid, test, "--format", "jsonl"))
    assert [(r["run"], r["file"]) for r in rows] == [(str(kn2), str(valid)), (str(kn2), str(test)),
                                                     (str(kn3), str(valid)), (str(kn3), str(test))]
    assert [r["model"] for r in rows] == ["ngram:kn2", "ngram:kn2", "ngram:kn3", "ngram:kn3"]
    for row in rows:  # each pair scores exactly as `lmkit score RUN FILE` does
        alone = single(row["run"], row["file"])
        assert row["perplexity"] == alone["perplexity"] and row["tokens"] == alone["tokens"]
    assert len({r["perplexity"] for r in rows}) == 4


def test_text_option_repeated_and_positional_texts_mix(runs):
    corpus, kn2, kn3 = runs
    a = jsonl(cli("score", kn3, "--text", corpus / "valid.txt", "--text", corpus / "test.txt", "-f", "jsonl"))
    b = jsonl(cli("score", kn3, corpus / "valid.txt", corpus / "test.txt", "-f", "jsonl"))
    assert [r["file"] for r in a] == [r["file"] for r in b] == [str(corpus / "valid.txt"), str(corpus / "test.txt")]
    assert [r["perplexity"] for r in a] == [r["perplexity"] for r in b]


def test_the_one_pair_form_keeps_its_output(runs):
    corpus, _, kn3 = runs
    record = single(kn3, corpus / "test.txt")
    assert isinstance(record, dict) and "run" not in record and record["file"] == str(corpus / "test.txt")
    tsv = cli("score", kn3, corpus / "test.txt", "--format", "tsv").stdout.splitlines()
    assert len(tsv) == 2 and tsv[0].startswith("tokens\t")


def test_json_is_a_list_and_tsv_one_line_per_pair(runs):
    corpus, kn2, kn3 = runs
    result = cli("score", kn2, kn3, "--text", corpus / "test.txt", "--format", "json")
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and [r["run"] for r in rows] == [str(kn2), str(kn3)]
    tsv = cli("score", kn2, kn3, "--text", corpus / "test.txt", "--format", "tsv").stdout.splitlines()
    assert len(tsv) == 3 and tsv[0].split("\t")[:3] == ["run", "model", "file"]
    one = json.loads(cli("score", kn3, "--text", corpus / "test.txt", "--format", "json").stdout)
    assert isinstance(one, list) and len(one) == 1  # --text: the rows form, also for one pair


def test_per_line_rows_name_their_pair(runs):
    corpus, kn2, kn3 = runs
    rows = jsonl(cli("score", kn2, kn3, "--text", corpus / "test.txt", "--per-line", "-f", "jsonl"))
    assert len(rows) == 60 and {r["run"] for r in rows} == {str(kn2), str(kn3)}
    assert [r["line"] for r in rows[:3]] == [1, 2, 3] and rows[30]["run"] == str(kn3)


def test_stdin_is_read_once_and_scored_by_every_run(runs):
    corpus, kn2, kn3 = runs
    text = (corpus / "test.txt").read_text(encoding="utf-8")
    rows = jsonl(cli("score", kn2, kn3, "-", "-f", "jsonl", input=text))
    assert [r["file"] for r in rows] == ["<stdin>", "<stdin>"]
    assert [r["perplexity"] for r in rows] == [single(kn2, corpus / "test.txt")["perplexity"],
                                               single(kn3, corpus / "test.txt")["perplexity"]]
    one_error_line(cli("score", kn2, "-", "--text", "-", input=text), 2, "stdin")


def test_a_missing_run_or_text_is_one_error_line(runs, tmp_path):
    corpus, kn2, _ = runs
    one_error_line(cli("score", kn2, tmp_path / "nope", "--text", corpus / "test.txt"), 1, "nope")
    one_error_line(cli("score", tmp_path / "nope", corpus / "test.txt"), 1, "no such run folder")


def test_device_defaults_to_auto():
    import typer

    from lmkit.cli import app

    command = typer.main.get_command(app).commands["score"]
    device = next(p for p in command.params if p.name == "device")
    assert device.default == "auto"
    one_error_line(cli("score", "x", "y", "--device", "gpu"), 2, "--device")


# -- compare and plot over a runs folder that holds a lineup folder --------------------------------------
@pytest.fixture(scope="module")
def runs_with_lineup(tmp_path_factory):
    """runs/ holding a run trained with `lmkit train` and a lineup written by `lmkit compare` (n-grams only)."""
    root = tmp_path_factory.mktemp("lineup")
    corpus = write_corpus(root / "corpus", seed=1)
    runs = root / "runs"
    result = cli("compare", "--corpus", corpus, "--models", "ngram:kn2,ngram:kn3", "--min-count", "2",
                 "--context", "stream", "-o", runs / "lineup", "-q", "-f", "json")
    assert result.exit_code == 0, result.stderr
    train(corpus, runs / "mine-kn4", "ngram:kn4", min_count=2, context="stream")
    return runs


def test_compare_reads_a_lineup_folder_as_its_runs(runs_with_lineup):
    paths = sorted(runs_with_lineup.iterdir())  # what the shell gives for runs/*
    result = cli("compare", *paths, "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(r["model"] for r in rows) == ["ngram:kn2", "ngram:kn3", "ngram:kn4"]
    assert sorted(r["run"] for r in rows) == sorted([str(runs_with_lineup / "lineup" / "ngram-kn2"),
                                                     str(runs_with_lineup / "lineup" / "ngram-kn3"),
                                                     str(runs_with_lineup / "mine-kn4")])
    note = result.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: ") and "lineup" in note[0] and "ngram-kn2" in note[0]
    assert cli("compare", *paths, "-q", "-f", "json").stderr == ""


def test_plot_reads_a_lineup_folder_as_its_runs(runs_with_lineup, tmp_path):
    pytest.importorskip("matplotlib")
    result = cli("plot", *sorted(runs_with_lineup.iterdir()), "-o", tmp_path / "curves.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "note: " in result.stderr and "error" not in result.stderr


def test_a_folder_without_runs_is_still_refused(runs_with_lineup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x\n")
    one_error_line(cli("compare", runs_with_lineup / "mine-kn4", empty), 1, "not a run folder")
    one_error_line(cli("compare", runs_with_lineup / "mine-kn4", tmp_path / "notes"), 1, "not a run folder")


def test_compare_of_a_lineup_folder_alone(runs_with_lineup):
    rows = jsonl(cli("compare", runs_with_lineup / "lineup", "-f", "jsonl", "-q"))
    assert sorted(r["model"] for r in rows) == ["ngram:kn2", "ngram:kn3"]


def test_the_library_reads_a_lineup_folder_too(runs_with_lineup):
    from lmkit import api

    rows = api.compare([runs_with_lineup / "lineup", runs_with_lineup / "mine-kn4"])
    assert sorted(r["model"] for r in rows) == ["ngram:kn2", "ngram:kn3", "ngram:kn4"]


def test_a_long_text_scored_in_parts_on_several_cpus_or_on_one_scores_the_same(runs, monkeypatch):
    """`lmkit score` past SCORE_PARALLEL_MIN positions scores in parts on the CPUs it may use; OMP_NUM_THREADS=1
    keeps it to one (docs/guide.md, Scoring): both give the same numbers, part for part."""
    from lmkit import parallel
    from lmkit.models.ngram import model as ngram_model

    corpus, _, kn3 = runs
    monkeypatch.setattr(ngram_model, "SCORE_PARALLEL_MIN", 40)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    split = []  # how many parts each scoring call cut its text into
    monkeypatch.setattr(ngram_model, "parts", lambda items, least: split.append(parallel.parts(items, least))
                        or split[-1])
    text = corpus / "test.txt"
    several = json.loads(cli("score", str(kn3), str(text), "--per-line", "--format", "json").stdout)
    assert max(split) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    split.clear()
    one = json.loads(cli("score", str(kn3), str(text), "--per-line", "--format", "json").stdout)
    assert split and max(split) == 1
    assert one == several
