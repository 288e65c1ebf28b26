"""`lmkit compare`: comparability checks, columns, ranking, sorting, formats, and a trained lineup."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import cli, one_error_line

from lmkit import api
from lmkit.compare import best_cells, compare_runs, table_view
from lmkit.errors import IncomparableError, ModelError, UsageError
from lmkit.render import write_rows
from clitools import lineup_table


def train(corpus: Path, out: Path, model: str, **kw) -> Path:
    req = api.TrainRequest(model=model, corpus=corpus, output=out, progress=False, **kw)
    return api.train(req)


@pytest.fixture
def ngram_runs(tiny_corpus: Path, tmp_path: Path) -> list[Path]:
    """Three sentence-context n-gram runs on the tiny corpus; stupid backoff is not normalised."""
    return [train(tiny_corpus, tmp_path / "runs" / name, model)
            for name, model in (("kn3", "ngram:kn3"), ("laplace2", "ngram:laplace2"), ("stupid3", "ngram:stupid3"))]


def _edit_record(run: Path, **changes) -> None:
    path = run / "run.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- rows, ranking, sorting -------------------------------------------------------------------------
def test_rows_columns_and_ranking(ngram_runs):
    rows = compare_runs(ngram_runs)
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"ngram:kn3", "ngram:laplace2", "ngram:stupid3"}
    for run in ngram_runs:
        rec = json.loads((run / "run.json").read_text())
        row = by_model[rec["label"]]
        assert row["parameters"] == rec["parameters"]  # n-gram entries, as num_parameters gives
        assert row["test_ppl"] == pytest.approx(rec["metrics"]["test"]["perplexity"])
        assert row["valid_ppl"] == pytest.approx(rec["metrics"]["valid"]["perplexity"])
        assert row["test_bits_per_token"] == pytest.approx(rec["metrics"]["test"]["cross_entropy_bits"])
        assert row["tokens_seen"] == rec["tokens_seen"] and row["run"] == str(run)
    assert "bits_per_char" not in rows[0]  # word level
    assert all(r["bleu"] is None for r in rows)  # BLEU is recorded for translation runs only
    for r in rows:  # scoring speed, measured when the run scored its test file
        speed = json.loads((Path(r["run"]) / "run.json").read_text())["metrics"]["test"]["tokens_per_second"]
        assert r["tokens_per_second"] == pytest.approx(speed) and speed > 0
    assert "bleu_signature" not in rows[0]
    # stupid backoff is shown, never ranked, and comes last even though its "perplexity" may be lower
    stupid = by_model["ngram:stupid3"]
    assert stupid["rank"] is None and stupid["normalised"] is False and "not normalised" in stupid["note"]
    assert rows[-1]["model"] == "ngram:stupid3"
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["rank"] for r in ranked] == [1, 2]
    assert ranked[0]["test_ppl"] <= ranked[1]["test_ppl"]


def test_sort_any_column(ngram_runs):
    by_params = compare_runs(ngram_runs, sort="parameters")
    assert [r["parameters"] for r in by_params] == sorted(r["parameters"] for r in by_params)
    desc = compare_runs(ngram_runs, sort="-test-ppl")
    assert [r["test_ppl"] for r in desc] == sorted((r["test_ppl"] for r in desc), reverse=True)
    # rank stays the perplexity rank whatever the order
    assert {r["model"]: r["rank"] for r in desc} == {r["model"]: r["rank"] for r in compare_runs(ngram_runs)}
    with pytest.raises(UsageError, match="cannot sort by 'speed'"):
        compare_runs(ngram_runs, sort="speed")
    r = cli("compare", *ngram_runs, "--sort", "model", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert [x["model"] for x in json.loads(r.stdout)] == ["ngram:kn3", "ngram:laplace2", "ngram:stupid3"]
    one_error_line(cli("compare", *ngram_runs, "--sort", "nope"), code=2)


def test_best_cells_skip_models_that_are_not_normalised(ngram_runs):
    rows = compare_runs(ngram_runs)
    # a fake non-normalised row with the lowest numbers everywhere must not win a perplexity column
    fake = {**rows[-1], "valid_ppl": 0.5, "test_ppl": 0.5, "test_ppl_excl_oov": 0.5, "test_bits_per_token": 0.1}
    rows = rows[:-1] + [fake]
    best = best_cells(rows)
    for col in ("valid_ppl", "test_ppl", "test_ppl_excl_oov", "test_bits_per_token"):
        i = best[col]
        assert rows[i]["normalised"]
        assert rows[i][col] == min(r[col] for r in rows if r["normalised"])
    assert "bleu" not in best  # no values, no highlight


def test_table_highlights_best_and_other_formats_stay_plain(ngram_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rows = compare_runs(ngram_runs)
    display, columns, highlight = table_view(rows)
    assert "test ppl" in columns and "BLEU" not in columns  # empty columns are left out of the table
    assert highlight["test ppl"] == 0  # rank 1 comes first by default
    buf = io.StringIO()
    write_rows(display, "table", columns=columns, highlight=highlight, out=buf)
    assert "ngram:kn3" in buf.getvalue()
    r = cli("compare", *ngram_runs, "--format", "tsv")
    assert "[bold" not in r.stdout and "\x1b[" not in r.stdout


def test_every_format_parses(ngram_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: rich folds cells to fit 80 columns
    def out(fmt: str) -> str:
        r = cli("compare", *ngram_runs, "--format", fmt)
        assert r.exit_code == 0, r.stderr
        return r.stdout

    data = json.loads(out("json"))
    assert len(data) == 3 and data[0]["rank"] == 1 and data[-1]["rank"] is None
    assert [json.loads(line)["model"] for line in out("jsonl").splitlines()] == [d["model"] for d in data]
    table = list(csv.DictReader(io.StringIO(out("csv"))))
    assert [t["model"] for t in table] == [d["model"] for d in data]
    assert float(table[0]["test_ppl"]) == pytest.approx(data[0]["test_ppl"], rel=1e-5)
    tsv = list(csv.DictReader(io.StringIO(out("tsv")), delimiter="\t"))
    assert tsv[0]["model"] == data[0]["model"]
    md = out("markdown").splitlines()
    assert md[0].startswith("| rank | model |") and set(md[1].replace(" ", "")) <= set("|-")
    assert len(md) == 2 + 3
    assert "ngram:kn3" in out("table")


# -- statuses and extra metrics ---------------------------------------------------------------------
def test_interrupted_is_marked_and_training_is_refused(ngram_runs):
    _edit_record(ngram_runs[1], status="interrupted")
    rows = {r["model"]: r for r in compare_runs(ngram_runs)}
    assert rows["ngram:laplace2"]["status"] == "interrupted" and rows["ngram:laplace2"]["note"] == "partly trained"
    _edit_record(ngram_runs[1], status="training")
    with pytest.raises(ModelError, match="status 'training'"):
        compare_runs(ngram_runs)
    one_error_line(cli("compare", *ngram_runs))


def test_bleu_and_speed_are_shown_when_recorded(ngram_runs):
    data = json.loads((ngram_runs[0] / "run.json").read_text())
    metrics = data["metrics"]
    metrics["bleu"] = {"score": 12.5, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.0"}
    metrics["test"]["tokens_per_second"] = 12345.0
    _edit_record(ngram_runs[0], metrics=metrics)
    rows = {r["model"]: r for r in compare_runs(ngram_runs)}
    assert rows["ngram:kn3"]["bleu"] == 12.5 and rows["ngram:laplace2"]["bleu"] is None
    assert rows["ngram:kn3"]["bleu_signature"].startswith("nrefs:1")
    assert rows["ngram:kn3"]["tokens_per_second"] == 12345.0
    ordered = compare_runs(ngram_runs)
    assert ordered[best_cells(ordered)["bleu"]]["model"] == "ngram:kn3"


def test_char_level_has_bits_per_char(tiny_corpus, tmp_path):
    runs = [train(tiny_corpus, tmp_path / m, f"ngram:{m}", level="char") for m in ("kn3", "wb3")]
    rows = compare_runs(runs)
    assert all(r["bits_per_char"] is not None and r["bits_per_char"] > 0 for r in rows)


def test_reading_needs_no_weights_and_no_torch(ngram_runs):
    for run in ngram_runs:
        for weights in run.glob("model.*"):
            weights.unlink()
    code = ("import sys; from lmkit.compare import compare_runs; "
            f"rows = compare_runs({[str(p) for p in ngram_runs]!r}); "
            "assert len(rows) == 3; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- refusals ---------------------------------------------------------------------------------------
def test_refuses_different_protocols(tiny_corpus, tmp_path):
    a = train(tiny_corpus, tmp_path / "a", "ngram:kn3", context="sentence")
    b = train(tiny_corpus, tmp_path / "b", "ngram:kn3", context="stream")
    with pytest.raises(IncomparableError) as err:
        compare_runs([a, b])
    msg = err.value.message
    assert f"{a} and {b} were not measured the same way" in msg
    assert "protocol differs (context sentence vs stream)" in msg
    assert "protocol differs (context sentence vs stream)" in one_error_line(cli("compare", a, b))


def test_different_vocabularies_meet_on_bits_per_byte_only(tiny_corpus, tmp_path):
    """Same text, other vocabularies: per-token columns go, bits per byte ranks, <unk> bytes are said."""
    a = train(tiny_corpus, tmp_path / "a", "ngram:kn3")
    b = train(tiny_corpus, tmp_path / "b", "ngram:kn3", min_count=1)
    rows = compare_runs([a, b])
    assert "test_ppl" not in rows[0] and "valid_ppl" not in rows[0] and rows[0]["vocab_size"] < rows[1]["vocab_size"] \
        or rows[0]["vocab_size"] > rows[1]["vocab_size"]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["bits_per_byte"] <= rows[1]["bits_per_byte"]
    assert all("bits/byte optimistic" in (r["note"] or "") for r in rows if r["unk_bytes"])
    other = tmp_path / "other_test.txt"
    other.write_text("a dog sat on the mat\n")
    c = train(tiny_corpus, tmp_path / "c", "ngram:kn3", min_count=1, test=other)
    line = one_error_line(cli("compare", a, c))
    assert f"{a} and {c} were not measured the same way: test file differs" in line


def test_refuses_different_test_files(tiny_corpus, tmp_path):
    other = tmp_path / "other_test.txt"
    other.write_text("a dog sat on the mat\n")
    a = train(tiny_corpus, tmp_path / "a", "ngram:kn3")
    b = train(tiny_corpus, tmp_path / "b", "ngram:kn3", test=other)
    c = train(tiny_corpus, tmp_path / "c", "ngram:laplace2")
    line = one_error_line(cli("compare", a, c, b))
    assert f"{a} and {b} were not measured the same way: test file differs" in line
    assert "other_test.txt" in line and "vocabulary differs" not in line
    compare_runs([a, c])  # the two that match are fine


def test_usage_errors(ngram_runs, tmp_path):
    one_error_line(cli("compare", ngram_runs[0], "--models", "mlp"), code=2)
    with pytest.raises(UsageError, match="--corpus"):
        api.compare([ngram_runs[0]], corpus=tmp_path)
    one_error_line(cli("compare", tmp_path / "missing"))


# -- a lineup trained by compare --------------------------------------------------------------------
def test_lineup_shares_one_vocabulary_and_protocol(tiny_corpus, tmp_path):
    out = tmp_path / "lineup"
    messages: list[str] = []
    rows = lineup_table(
        tiny_corpus, ["ngram:laplace3", "ngram:kn3", "mlp", "lstm"], "4s", max_tokens=64,
        options={"mlp": {"window": 2, "embed": 8, "hidden": 16}, "lstm": {"layers": 1, "hidden": 16}},
        train_options={"batch_size": 2, "seq_len": 8}, runs_dir=out, log=messages.append)
    assert sorted(p.name for p in out.iterdir()) == ["lstm", "mlp", "ngram-kn3", "ngram-laplace3"]
    records = [json.loads((p / "run.json").read_text()) for p in out.iterdir()]
    assert len({r["vocab_id"] for r in records}) == 1
    assert {r["protocol"]["context"] for r in records} == {"stream"}
    vocab = json.loads((out / "mlp" / "vocab.json").read_text())
    assert vocab["min_count"] == 2
    neural = [r for r in records if r["kind"] != "ngram"]
    assert [r["train_config"]["time_budget"] for r in neural] == [2.0, 2.0]  # 4 s split between two
    assert {r["model"] for r in rows} == {"ngram:laplace3", "ngram:kn3", "mlp", "lstm"}
    assert all(r["status"] == "complete" and r["test_ppl"] for r in rows)
    assert sum(m.startswith("[") and "training" in m for m in messages) == 4  # one progress line per model


def test_lineup_cli_ngrams_only_and_refusals(tiny_corpus, tmp_path):
    out = tmp_path / "ng"
    r = cli("compare", "--corpus", tiny_corpus, "--models", "ngram:laplace3,ngram:kn3", "--context", "sentence",
            "-o", out, "--format", "json", "-q")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["rank"] for x in rows] == [1, 2] and rows[0]["model"] == "ngram:kn3"
    assert r.stderr == ""  # -q
    # a non-empty output folder, a bad model or a bad --sort are refused before any training
    one_error_line(cli("compare", "--corpus", tiny_corpus, "--models", "ngram:kn3", "-o", out), code=2)
    fresh = tmp_path / "fresh"
    one_error_line(cli("compare", "--corpus", tiny_corpus, "--models", "ngram:kn3,bogus", "-o", fresh), code=2)
    one_error_line(cli("compare", "--corpus", tiny_corpus, "--models", "ngram:kn3", "--sort", "x", "-o", fresh),
                   code=2)
    assert not fresh.exists()


# -- BLEU column ------------------------------------------------------------------------------------
def test_compare_bleu_adds_continuation_bleu_once_and_refuses_changed_test_files(ngram_runs, tiny_corpus):
    run = ngram_runs[0]
    expected = api.bleu(run, tiny_corpus / "test.txt").result.score
    out = cli("compare", *ngram_runs, "--bleu", "--format", "json", "-q")
    assert out.exit_code == 0, out.stderr
    rows = {r["run"]: r for r in json.loads(out.stdout)}
    assert rows[str(run)]["bleu"] == pytest.approx(expected)
    assert rows[str(run)]["bleu_signature"].startswith("nrefs:1")
    stored = json.loads((run / "run.json").read_text())["metrics"]["bleu"]
    assert stored["score"] == pytest.approx(expected)
    # the second time it is read from run.json, not recomputed: even with the test file gone
    (tiny_corpus / "test.txt").write_text("a changed test file\n")
    again = compare_runs(ngram_runs)
    assert {r["run"]: r["bleu"] for r in again}[str(run)] == pytest.approx(expected)
    # a run without BLEU whose test file changed is refused with one line
    fresh = ngram_runs[1]
    data = json.loads((fresh / "run.json").read_text())
    data["metrics"].pop("bleu", None)
    (fresh / "run.json").write_text(json.dumps(data))
    assert "sha256 differs" in one_error_line(cli("compare", fresh, "--bleu", "-q"))
