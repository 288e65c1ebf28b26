"""`lmkit compare --seeds K`: neural models trained K times, one row per model with mean and sample sd.

One lineup (an n-gram and two tiny neural models, 3 seeds, 64 training tokens each) is trained once
through the CLI; the other tests read its run folders. Means and sds are checked with the standard
library's `statistics` against the per-seed run.json values (the code under test uses numpy)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from clitools import cli, one_error_line

from lmkit import api
from lmkit.compare import LineupRuns, compare_runs, compare_seeded, table_view
from lmkit.errors import UsageError
from lmkit.render import write_rows
from clitools import lineup_table

SEEDS = (0, 1, 2)
NEURAL = ("mlp", "lstm")


def _corpus(root: Path) -> Path:
    d = root / "corpus"
    d.mkdir()
    (d / "train.txt").write_text("the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\nthe cat ate\n" * 3)
    (d / "valid.txt").write_text("the dog sat on the mat\na cat sat\n")
    (d / "test.txt").write_text("the cat sat on the log\nthe bird sat\na dog saw the cat\n")
    return d


@pytest.fixture(scope="module")
def lineup(tmp_path_factory) -> dict:
    """The CLI's json rows, stderr and run folder of one 3-seed lineup."""
    root = tmp_path_factory.mktemp("seeds")
    corpus, out = _corpus(root), root / "runs"
    result = cli("compare", "--corpus", corpus, "--models", "ngram:kn3,mlp,lstm", "--seeds", len(SEEDS),
                 "--max-tokens", 64, "--min-count", 1, "--time-budget", "60s", "-o", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return {"rows": {r["model"]: r for r in json.loads(result.stdout)}, "stderr": result.stderr, "out": out,
            "corpus": corpus}


def _records(out: Path, model: str) -> list[dict]:
    return [json.loads((out / f"{model}-seed{s}" / "run.json").read_text()) for s in SEEDS]


def _groups(out: Path) -> list[LineupRuns]:
    return [LineupRuns("ngram:kn3", (out / "ngram-kn3",), None)] + [
        LineupRuns(m, tuple(out / f"{m}-seed{s}" for s in SEEDS), SEEDS) for m in NEURAL]


def test_neural_models_train_once_per_seed_and_ngrams_once(lineup):
    out = lineup["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ngram-kn3"] + [f"{m}-seed{s}" for m in NEURAL for s in SEEDS])
    for model in NEURAL:
        records = _records(out, model)
        assert [r["seed"] for r in records] == list(SEEDS)
        # 60 s split over 2 neural models x 3 seeds: 10 s per seed run, said once in the log
        assert {r["train_config"]["time_budget"] for r in records} == {10.0}
        # different seeds really train different models
        assert len({r["metrics"]["test"]["perplexity"] for r in records}) == len(SEEDS)
    assert "10 s per neural seed run" in lineup["stderr"]
    assert "n-grams are deterministic and train once" in lineup["stderr"]
    ngram = lineup["rows"]["ngram:kn3"]
    assert ngram["seeds"] == 1 and ngram["test_ppl_sd"] is None and ngram["valid_ppl_sd"] is None
    assert "deterministic: trained once" in ngram["note"]
    assert ngram["run"].endswith("ngram-kn3")


def test_mean_and_sample_sd_equal_the_per_seed_records(lineup):
    rows = lineup["rows"]
    assert len(rows) == 3  # one row per model, not per seed
    for model in NEURAL:
        records, row = _records(lineup["out"], model), rows[model]
        test = [r["metrics"]["test"]["perplexity"] for r in records]
        valid = [r["metrics"]["valid"]["perplexity"] for r in records]
        bits = [r["metrics"]["test"]["cross_entropy_bits"] for r in records]
        assert row["seeds"] == len(SEEDS)
        assert row["test_ppl"] == pytest.approx(statistics.mean(test), rel=1e-12)
        assert row["test_ppl_sd"] == pytest.approx(statistics.stdev(test), rel=1e-9)  # ddof=1
        assert row["valid_ppl"] == pytest.approx(statistics.mean(valid), rel=1e-12)
        assert row["valid_ppl_sd"] == pytest.approx(statistics.stdev(valid), rel=1e-9)
        assert row["test_bits_per_token"] == pytest.approx(statistics.mean(bits), rel=1e-12)
        assert row["tokens_seen"] == round(statistics.mean(r["tokens_seen"] for r in records))
        assert row["parameters"] == records[0]["parameters"]
        assert "mean ± sd of seeds 0, 1, 2" in row["note"]
    # ranked by the mean test perplexity
    by_rank = sorted(rows.values(), key=lambda r: r["rank"])
    assert [r["test_ppl"] for r in by_rank] == sorted(r["test_ppl"] for r in by_rank)


def test_every_format_carries_the_seed_columns(lineup):
    rows = compare_seeded(_groups(lineup["out"]))
    assert {r["model"]: r["test_ppl"] for r in rows} == pytest.approx(
        {m: r["test_ppl"] for m, r in lineup["rows"].items()})
    for model in NEURAL:  # json: numbers, not strings
        row = lineup["rows"][model]
        assert isinstance(row["seeds"], int) and isinstance(row["test_ppl_sd"], float)

    def out(fmt: str) -> str:
        buf = io.StringIO()
        write_rows(rows, fmt, out=buf)
        return buf.getvalue()

    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        table = list(csv.DictReader(io.StringIO(out(fmt)), delimiter=delimiter))
        assert {"seeds", "valid_ppl_sd", "test_ppl_sd"} <= set(table[0])
        cells = {r["model"]: r for r in table}
        assert cells["ngram:kn3"]["test_ppl_sd"] == "" and cells["ngram:kn3"]["seeds"] == "1"
        assert float(cells["lstm"]["test_ppl_sd"]) == pytest.approx(lineup["rows"]["lstm"]["test_ppl_sd"], rel=1e-5)
    header = out("markdown").splitlines()[0]
    assert "| seeds |" in header and "| test_ppl_sd |" in header and "| valid_ppl_sd |" in header
    jsonl = [json.loads(line) for line in out("jsonl").splitlines()]
    assert all("test_ppl_sd" in r for r in jsonl)

    display, columns, highlight = table_view(rows)
    assert "seeds" in columns
    cell = {d["model"]: d for d in display}
    lstm = lineup["rows"]["lstm"]
    assert cell["lstm"]["test ppl"] == f"{lstm['test_ppl']:,.2f} ± {lstm['test_ppl_sd']:,.2f}"
    assert cell["mlp"]["valid ppl"].count("±") == 1
    assert "±" not in cell["ngram:kn3"]["test ppl"]  # trained once: no sd pretending to be measured
    best = min(rows, key=lambda r: r["test_ppl"])
    assert display[highlight["test ppl"]]["model"] == best["model"]  # highlighted by the mean
    buf = io.StringIO()
    write_rows(display, "table", columns=columns, highlight=highlight, out=buf)
    assert "±" in buf.getvalue()


def test_bootstrap_resamples_the_first_seed_run(lineup):
    out = lineup["out"]
    seeded = {r["model"]: r for r in compare_seeded(_groups(out), bootstrap=200, seed=1)}
    firsts = [out / "ngram-kn3"] + [out / f"{m}-seed0" for m in NEURAL]
    single = {r["model"]: r for r in compare_runs(firsts, bootstrap=200, seed=1)}
    for model in NEURAL:
        assert seeded[model]["test_ppl_lo"] == pytest.approx(single[model]["test_ppl_lo"])
        assert seeded[model]["test_ppl_hi"] == pytest.approx(single[model]["test_ppl_hi"])
        assert "bootstrap interval of the seed-0 run only" in seeded[model]["note"]
        assert seeded[model]["test_ppl"] != pytest.approx(single[model]["test_ppl"])  # the mean, not seed 0
    assert "bootstrap" not in seeded["ngram:kn3"]["note"]


def test_bad_seeds_and_seeds_with_run_folders_are_usage_errors(lineup, tmp_path):
    fresh = tmp_path / "never"
    for k in ("0", "-1"):
        line = one_error_line(cli("compare", "--corpus", lineup["corpus"], "--models", "mlp", "--seeds", k,
                                  "-o", fresh), code=2)
        assert "--seeds" in line
    assert not fresh.exists()  # refused before anything was trained
    line = one_error_line(cli("compare", lineup["out"] / "mlp-seed0", lineup["out"] / "mlp-seed1", "--seeds", "2"),
                          code=2)
    assert "--seeds" in line
    with pytest.raises(UsageError, match="--seeds"):
        lineup_table(lineup["corpus"], ["mlp"], seeds=0, runs_dir=fresh)
    with pytest.raises(UsageError, match="--seeds"):
        api.compare([lineup["out"] / "mlp-seed0"], seeds=1)


def test_one_seed_is_the_plain_lineup(lineup, tmp_path):
    out = tmp_path / "one"
    rows = api.compare(corpus=lineup["corpus"], models=["ngram:kn3", "mlp"], max_tokens=32, min_count=1,
                       seeds=1, runs_dir=out, sort="test_ppl")
    assert sorted(p.name for p in out.iterdir()) == ["mlp", "ngram-kn3"]
    assert all("seeds" not in r and "test_ppl_sd" not in r for r in rows)
