"""Paired bootstrap intervals: the statistics, the stored per-sequence scores, and `compare --bootstrap`."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import cli, one_error_line

from lmkit import api
from lmkit.compare import BOOTSTRAP_COLUMNS, NO_SCORES_NOTE, compare_runs
from lmkit.evaluate.bootstrap import paired_bootstrap
from lmkit.evaluate.per_sequence import TEST_SCORES_FILE


def fake_test_set(sequences: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence scored tokens and the NLL of one fake model (about 1.5-2.5 nats per token)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 30, sequences)
    return tokens * rng.uniform(1.5, 2.5, sequences), tokens


def corpus_ppl(nll: np.ndarray, tokens: np.ndarray) -> float:
    return float(np.exp(nll.sum() / tokens.sum()))


# -- the statistics ---------------------------------------------------------------------------------
def test_same_seed_same_intervals_other_seed_slightly_different():
    nll, tokens = fake_test_set()
    both = np.stack([nll, nll + 0.05 * tokens])
    a, b = paired_bootstrap(both, tokens, 300, seed=7), paired_bootstrap(both, tokens, 300, seed=7)
    for field in ("ppl_lo", "ppl_hi", "diff_lo", "diff_hi", "p_worse"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = paired_bootstrap(both, tokens, 300, seed=8)
    assert not np.array_equal(a.ppl_lo, c.ppl_lo)
    np.testing.assert_allclose(a.ppl_lo, c.ppl_lo, rtol=0.02)  # another draw, not another answer
    np.testing.assert_allclose(a.ppl_hi, c.ppl_hi, rtol=0.02)


def test_known_difference_is_covered_and_zero_excluded():
    # model B pays exactly 0.1 nats more than A on every token, so on ANY resample
    # ppl_B = exp((nll_A + 0.1 * tokens) / tokens) = ppl_A * e^0.1: B is always worse, by ppl_A * (e^0.1 - 1)
    nll, tokens = fake_test_set(sequences=1000)
    res = paired_bootstrap(np.stack([nll, nll + 0.1 * tokens]), tokens, 500, seed=1)
    true_diff = corpus_ppl(nll, tokens) * (np.exp(0.1) - 1)
    assert res.best == 0
    assert res.diff_lo[1] <= true_diff <= res.diff_hi[1]
    assert res.diff_lo[1] > 0  # zero excluded: the difference is real
    assert res.p_worse[1] == 1.0 and res.p_worse[0] == 0.0
    assert res.diff_lo[0] == res.diff_hi[0] == 0.0  # the best against itself
    # paired: the difference varies far less than either perplexity does
    assert res.diff_hi[1] - res.diff_lo[1] < 0.5 * (res.ppl_hi[0] - res.ppl_lo[0])


def test_noisy_difference_covers_the_full_data_difference():
    nll, tokens = fake_test_set(sequences=2000, seed=3)
    noise = np.random.default_rng(4).normal(0.0, 0.3, len(tokens)) * tokens
    other = nll + 0.05 * tokens + noise
    res = paired_bootstrap(np.stack([other, nll]), tokens, 1000, seed=2, confidence=0.99)
    assert res.best == 1  # the lower perplexity is the default reference
    full_diff = corpus_ppl(other, tokens) - corpus_ppl(nll, tokens)
    assert res.diff_lo[0] <= full_diff <= res.diff_hi[0]
    assert res.diff_lo[0] > 0 and res.p_worse[0] > 0.99


def test_identical_models_tie_exactly():
    nll, tokens = fake_test_set()
    res = paired_bootstrap(np.stack([nll, nll.copy(), nll.copy()]), tokens, 400, seed=0)
    assert np.all(res.diff_lo == 0.0) and np.all(res.diff_hi == 0.0)
    assert np.all(res.p_worse == 0.0)
    np.testing.assert_array_equal(res.ppl_lo, res.ppl_lo[0])


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.99])
def test_single_model_interval_contains_full_data_perplexity(confidence):
    nll, tokens = fake_test_set(seed=5)
    res = paired_bootstrap(nll[None, :], tokens, 500, seed=0, confidence=confidence)
    assert res.perplexity[0] == pytest.approx(corpus_ppl(nll, tokens))
    assert res.ppl_lo[0] < res.perplexity[0] < res.ppl_hi[0]


def test_wider_confidence_gives_wider_interval():
    nll, tokens = fake_test_set(seed=6)
    narrow = paired_bootstrap(nll[None, :], tokens, 500, seed=0, confidence=0.8)
    wide = paired_bootstrap(nll[None, :], tokens, 500, seed=0, confidence=0.99)
    assert wide.ppl_lo[0] < narrow.ppl_lo[0] and narrow.ppl_hi[0] < wide.ppl_hi[0]


def test_bad_inputs_are_refused():
    nll, tokens = fake_test_set(sequences=10)
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(nll[None, :], tokens[:5], 10)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.where(np.arange(10) == 3, np.inf, nll)[None, :], tokens, 10)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(nll[None, :], tokens, 10, confidence=1.0)


def test_thousand_resamples_of_four_thousand_sequences_are_fast():
    nll, tokens = fake_test_set(sequences=4000)
    models = np.stack([nll + k * 0.01 * tokens for k in range(5)])
    paired_bootstrap(models[:, :100], tokens[:100], 10)  # warm up numpy/BLAS once
    start = time.process_time()  # CPU time: a loaded CI machine must not fail it, a Python loop per resample does
    paired_bootstrap(models, tokens, 1000, seed=0)
    assert time.process_time() - start < 2.0


# -- stored per-sequence scores ---------------------------------------------------------------------
def _train(corpus: Path, out: Path, model: str, **kw) -> Path:
    return api.train(api.TrainRequest(model=model, corpus=corpus, output=out, progress=False, **kw))


def _stored(run: Path) -> dict:
    with np.load(run / TEST_SCORES_FILE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture
def runs(tiny_corpus: Path, tmp_path: Path) -> list[Path]:
    return [_train(tiny_corpus, tmp_path / name, model)
            for name, model in (("kn3", "ngram:kn3"), ("laplace2", "ngram:laplace2"), ("stupid3", "ngram:stupid3"))]


def _check_consistent(run: Path) -> None:
    record = json.loads((run / "run.json").read_text())
    test, info = record["metrics"]["test"], record["data"]["test"]
    stored = _stored(run)
    assert stored["nll"].dtype == np.float64 and stored["nll"].shape == (info["sequences"],)
    assert stored["nll"].sum() == pytest.approx(test["nll_nats"], rel=1e-12)
    assert int(stored["tokens"].sum()) == test["tokens"] and int(stored["oov"].sum()) == test["oov"]
    assert str(stored["sha256"]) == info["sha256"]


def test_ngram_run_stores_per_sequence_scores_that_add_up(runs, tiny_corpus):
    _check_consistent(runs[0])
    # and they are the per-line totals `lmkit score --per-line` reports
    per_line = api.score(runs[0], tiny_corpus / "test.txt").score.per_line()
    np.testing.assert_allclose(_stored(runs[0])["nll"], [-r["logprob"] for r in per_line], rtol=1e-12)
    assert _stored(runs[0])["tokens"].tolist() == [r["tokens"] for r in per_line]


def test_neural_run_stores_per_sequence_scores_that_add_up(tiny_corpus, tmp_path):
    run = _train(tiny_corpus, tmp_path / "mlp", "mlp", options={"window": 2, "embed": 8, "hidden": 16},
                 train_options={"max_tokens": 64, "batch_size": 2})
    _check_consistent(run)


# -- compare --bootstrap ----------------------------------------------------------------------------
def test_cli_bootstrap_columns_in_every_format(runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    args = ("compare", *runs, "--bootstrap", 200, "--seed", 1)
    r = cli(*args, "--format", "json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert all(set(BOOTSTRAP_COLUMNS) <= set(row) for row in rows)
    cols = list(rows[0])
    assert cols[cols.index("test_ppl") + 1:cols.index("test_ppl") + 6] == list(BOOTSTRAP_COLUMNS)
    best, second, stupid = rows
    assert best["rank"] == 1 and best["diff_to_best_lo"] == best["diff_to_best_hi"] == 0.0
    assert best["p_worse_than_best"] == 0.0
    for row in (best, second):
        assert row["test_ppl_lo"] <= row["test_ppl"] <= row["test_ppl_hi"]
    assert 0.0 <= second["p_worse_than_best"] <= 1.0 and second["diff_to_best_lo"] <= second["diff_to_best_hi"]
    assert all(stupid[c] is None for c in BOOTSTRAP_COLUMNS) and "no confidence interval" in stupid["note"]
    assert json.loads(cli(*args, "--format", "json").stdout) == rows  # seeded: the same numbers again
    table = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    assert float(table[1]["test_ppl_hi"]) == pytest.approx(second["test_ppl_hi"], rel=1e-5)
    assert "p_worse_than_best" in cli(*args, "--format", "markdown").stdout.splitlines()[0]
    shown = cli(*args, "--format", "table").stdout
    assert "ppl lo" in shown and "p worse" in shown and "95% paired bootstrap" in shown
    assert "test_ppl_lo" not in json.loads(cli("compare", *runs, "--format", "json").stdout)[0]  # only on request


def test_bootstrap_sort_and_library_call(runs):
    rows = api.compare(runs, bootstrap=100, seed=3, sort="-test_ppl_hi")
    his = [r["test_ppl_hi"] for r in rows if r["test_ppl_hi"] is not None]
    assert his == sorted(his, reverse=True) and rows[-1]["test_ppl_hi"] is None
    assert rows == api.compare(runs, bootstrap=100, seed=3, sort="-test_ppl_hi")


def test_missing_or_tampered_scores_become_notes(runs):
    kn3, laplace2, _ = runs
    (laplace2 / TEST_SCORES_FILE).unlink()
    rows = {r["model"]: r for r in compare_runs(runs, bootstrap=50)}
    assert rows["ngram:laplace2"]["note"] == NO_SCORES_NOTE
    assert rows["ngram:laplace2"]["test_ppl_lo"] is None and rows["ngram:kn3"]["test_ppl_lo"] is not None

    stored = _stored(kn3)
    stored["nll"][0] += 1.0  # an edited file no longer adds up to run.json's test NLL
    with (kn3 / TEST_SCORES_FILE).open("wb") as fh:
        np.savez(fh, **stored)
    r = cli("compare", *runs, "--bootstrap", 50, "--format", "json")
    assert r.exit_code == 0 and "Traceback" not in r.stderr
    note = {x["model"]: x for x in json.loads(r.stdout)}["ngram:kn3"]["note"]
    assert "per-sequence scores unusable" in note and "adds up to" in note

    (kn3 / TEST_SCORES_FILE).write_bytes(b"not a zip file")
    note = {x["model"]: x for x in compare_runs(runs, bootstrap=50)}["ngram:kn3"]["note"]
    assert "damaged" in note


def test_pickled_arrays_are_never_loaded(runs):
    kn3 = runs[0]
    stored = _stored(kn3)
    stored["sha256"] = np.array([{"evil": 1}], dtype=object)
    with (kn3 / TEST_SCORES_FILE).open("wb") as fh:
        np.savez(fh, **stored)
    note = {x["model"]: x for x in compare_runs(runs, bootstrap=20)}["ngram:kn3"]["note"]
    assert "damaged" in note


def test_reference_is_best_model_with_scores(runs):
    (runs[0] / TEST_SCORES_FILE).unlink()  # rank 1 has none: laplace2 becomes the reference
    rows = {r["model"]: r for r in compare_runs(runs, bootstrap=50)}
    assert rows["ngram:laplace2"]["diff_to_best_hi"] == 0.0
    assert "bootstrap reference" in rows["ngram:laplace2"]["note"]


def test_bad_bootstrap_options_are_usage_errors(runs):
    one_error_line(cli("compare", *runs, "--bootstrap", 0), code=2)
    one_error_line(cli("compare", *runs, "--bootstrap", 10, "--confidence", 1.5), code=2)
    one_error_line(cli("compare", *runs, "--bootstrap", 10, "--sort", "nope"), code=2)


# -- lmkit score --save (older runs) ----------------------------------------------------------------
def test_score_save_restores_scores_of_an_older_run(runs, tiny_corpus, tmp_path):
    kn3 = runs[0]
    before = _stored(kn3)
    (kn3 / TEST_SCORES_FILE).unlink()
    r = cli("score", kn3, tiny_corpus / "test.txt", "--save", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] == int(before["tokens"].sum())
    after = _stored(kn3)
    np.testing.assert_allclose(after["nll"], before["nll"], rtol=1e-12)
    assert str(after["sha256"]) == str(before["sha256"])
    other = tmp_path / "other.txt"
    other.write_text("the cat sat\n")
    assert "sha256 differs" in one_error_line(cli("score", kn3, other, "--save"), code=2)
    arpa = tmp_path / "kn3.arpa"
    api.export_arpa(kn3, arpa)
    assert "ARPA" in one_error_line(cli("score", arpa, tiny_corpus / "test.txt", "--save"), code=2)
