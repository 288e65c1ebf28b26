"""Comparability rules and row arithmetic mutation testing found unpinned (docs/testing.md, bench/mutation.py
compare): the per-model row of several runs (mean, sample sd, status, tokens), the refusal naming the
differing evaluation file, sorting, ranking and the argument checks. Runs are tiny n-gram models, trained with
sentence context and every word kept whatever lmkit's defaults, or hand-written run.json records (compare reads
nothing else) for exact row values, fallbacks, notes and refusal texts."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from lmkit import api
from lmkit.compare import (LineupRuns, add_intervals, best_cells, check_bootstrap, check_seeds, check_sort_column,
                           compare_runs, compare_seeded, compare_trained, read_runs, sort_rows)
from lmkit.errors import IncomparableError, ModelError, UsageError

TRAIN = "the cat sat on the mat\nthe dog sat on the log\na cat saw a dog\nthe cat ate\n"


def train(req: api.TrainRequest) -> Path:
    """A run of the request with the settings these tests were written for (sentence context, every word kept),
    whatever lmkit's defaults are."""
    import dataclasses

    return api.train(dataclasses.replace(req, context=req.context or "sentence", min_count=1))


def corpus(root: Path, name: str, test: str | None = "the cat sat on the log\nthe bird sat\n") -> Path:
    d = root / name
    d.mkdir()
    (d / "train.txt").write_text(TRAIN)
    (d / "valid.txt").write_text("the dog sat on the mat\na cat sat\n")
    if test is not None:
        (d / "test.txt").write_text(test)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill-compare")
    c = corpus(root, "c")
    out = {}
    for model in ("ngram:kn2", "ngram:wb2", "ngram:laplace2", "ngram:kn3", "ngram:addk2"):
        out[model] = train(api.TrainRequest(model=model, corpus=c, output=root / model.replace(":", "-"),
                                                progress=False))
    out["other-test"] = train(api.TrainRequest(model="ngram:kn2", corpus=corpus(root, "c2", "a dog sat\n"),
                                                   output=root / "other-test", progress=False))
    out["no-test"] = train(api.TrainRequest(model="ngram:kn2", corpus=corpus(root, "c3", None),
                                                output=root / "no-test", progress=False))
    return out


def test_a_model_row_over_several_runs_is_their_mean_and_sample_sd(runs):
    group = (runs["ngram:kn2"], runs["ngram:wb2"], runs["ngram:laplace2"])
    single = {r["run"]: r for r in compare_runs(list(group))}
    rows = compare_seeded([LineupRuns("m", group, (0, 1, 2)), LineupRuns("k", (runs["ngram:kn3"],), None)])
    m = next(r for r in rows if r["seeds"] == 3)
    k = next(r for r in rows if r["seeds"] == 1)
    for col in ("valid_ppl", "test_ppl"):
        values = [single[str(p)][col] for p in group]
        assert m[col] == pytest.approx(statistics.mean(values), rel=1e-12)
        assert m[f"{col}_sd"] == pytest.approx(statistics.stdev(values), rel=1e-9)
        assert k[f"{col}_sd"] is None
    assert m["tokens_seen"] == round(statistics.mean(single[str(p)]["tokens_seen"] for p in group))
    assert isinstance(m["tokens_seen"], int)
    assert m["status"] == "complete" and m["rank"] in (1, 2) and {m["rank"], k["rank"]} == {1, 2}
    assert "mean ± sd of seeds 0, 1, 2" in m["note"] and "deterministic: trained once, no sd" in k["note"]
    assert list(rows[0]).index("seeds") == list(rows[0]).index("normalised") + 1
    assert list(rows[0]).index("test_ppl_sd") == list(rows[0]).index("test_ppl") + 1


def test_two_runs_have_an_sd_one_run_none(runs):
    two = (runs["ngram:kn2"], runs["ngram:wb2"])
    single = {r["run"]: r for r in compare_runs(list(two))}
    (row,) = compare_seeded([LineupRuns("m", two, (3, 4))])
    values = [single[str(p)]["test_ppl"] for p in two]
    assert row["test_ppl_sd"] == pytest.approx(statistics.stdev(values), rel=1e-9)
    assert row["seeds"] == 2


def test_compare_trained_aggregates_only_with_several_seeds(runs):
    groups = [LineupRuns("a", (runs["ngram:kn2"],), (0,)), LineupRuns("b", (runs["ngram:wb2"],), None)]
    rows = compare_trained(groups)
    assert "seeds" not in rows[0] and len(rows) == 2
    rows = compare_trained([LineupRuns("a", (runs["ngram:kn2"], runs["ngram:wb2"]), (0, 1))])
    assert rows[0]["seeds"] == 2


def test_refusal_names_the_differing_test_files(runs):
    with pytest.raises(IncomparableError) as err:
        compare_runs([runs["ngram:kn2"], runs["other-test"]])
    msg = str(err.value)
    assert "test file differs (" in msg and " sha256 " in msg
    first, second = msg.split("test file differs (")[1].split(")")[0].split(" vs ")
    for text, folder in ((first, "c"), (second, "c2")):
        path, sha = text.split(" sha256 ")
        assert Path(path).parent.name == folder and Path(path).name == "test.txt"
        assert len(sha) == 12 and sha != "None"
    assert first != second
    with pytest.raises(IncomparableError, match=r"test file differs \(.* sha256 \w{12} vs none\)"):
        compare_runs([runs["ngram:kn2"], runs["no-test"]])


def test_refusal_counts_the_other_offenders(runs):
    with pytest.raises(IncomparableError, match=r"\(1 more run\(s\) differ from .* too\)"):
        compare_runs([runs["ngram:kn2"], runs["other-test"], runs["no-test"]])


def test_runs_without_a_test_file_are_ranked_by_valid_perplexity(runs, tmp_path):
    c = corpus(tmp_path, "v", None)
    a = train(api.TrainRequest(model="ngram:kn2", corpus=c, output=tmp_path / "a", progress=False))
    b = train(api.TrainRequest(model="ngram:laplace2", corpus=c, output=tmp_path / "b", progress=False))
    rows = compare_runs([b, a])
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["valid_ppl"] < rows[1]["valid_ppl"] and rows[0]["test_ppl"] is None


def test_sorting_puts_empty_cells_last_either_way():
    rows = [{"a": 2.0, "b": "x"}, {"a": None, "b": "y"}, {"a": 1.0, "b": "z"}]
    assert [r["b"] for r in sort_rows(rows, "a")] == ["z", "x", "y"]
    assert [r["b"] for r in sort_rows(rows, "-a")] == ["x", "z", "y"]
    assert sort_rows([], "test-ppl") == []
    assert check_sort_column("-test-ppl") == "test_ppl"
    with pytest.raises(UsageError, match=r"cannot sort by 'nope'; choose one of: rank, model"):
        check_sort_column("nope")


def test_best_cells_lowest_perplexity_highest_bleu_normalised_only():
    rows = [{"test_ppl": 5.0, "normalised": False, "bleu": 3.0},
            {"test_ppl": 7.0, "normalised": True, "bleu": 9.0},
            {"test_ppl": 6.0, "normalised": True, "bleu": 9.0},
            {"test_ppl": None, "normalised": True, "bleu": None}]
    best = best_cells(rows)
    assert best["test_ppl"] == 2  # row 0 is lower but not normalised
    assert best["bleu"] == 1  # ties go to the first row
    assert "valid_ppl" not in best


@pytest.mark.parametrize("n, confidence, match", [
    (0, 0.95, "--bootstrap needs at least 1 resample, got 0 (1000 is a good choice)$"),
    (1_000_001, 0.95, "--bootstrap 1000001 is beyond lmkit's limit of 1,000,000 resamples (1000 is a good choice)$"),
    (10, 0.0, "--confidence must be between 0 and 1, e.g. 0.95; got 0.0"),
    (10, 1.0, "--confidence must be between 0 and 1"),
])
def test_bootstrap_arguments_are_checked(n, confidence, match):
    with pytest.raises(UsageError, match=match.replace("(", r"\(").replace(")", r"\)")):
        check_bootstrap(n, confidence)


def test_bootstrap_limits_are_inclusive():
    check_bootstrap(1, 0.5)
    check_bootstrap(1_000_000, 0.999)


def test_seed_counts_are_checked():
    check_seeds(1)
    check_seeds(1000)
    with pytest.raises(UsageError, match="--seeds needs at least 1 training run per neural model, got 0"):
        check_seeds(0)
    with pytest.raises(UsageError, match="--seeds 1001 is beyond lmkit's limit of 1,000 training runs"):
        check_seeds(1001)


# -- bootstrap columns -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lineup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill-compare-bootstrap")
    c = corpus(root, "c")
    return {m: train(api.TrainRequest(model=m, corpus=c, output=root / m.replace(":", "-"), progress=False))
            for m in ("ngram:laplace2", "ngram:kn2", "ngram:mle2", "ngram:stupid2")}


def test_bootstrap_notes_say_why_a_run_has_no_interval(lineup):
    rows = {r["model"]: r for r in compare_runs(list(lineup.values()), bootstrap=30)}
    assert rows["ngram:mle2"]["note"] == "infinite test perplexity; no confidence interval"
    assert rows["ngram:stupid2"]["note"] == "not normalised, not ranked; no confidence interval"
    for model in ("ngram:mle2", "ngram:stupid2"):
        assert rows[model]["test_ppl_lo"] is None and rows[model]["p_worse_than_best"] is None
    best, other = rows["ngram:kn2"], rows["ngram:laplace2"]
    assert best["rank"] == 1 and other["rank"] == 2  # laplace2 is listed first: the reference is by rank
    assert best["diff_to_best_lo"] == best["diff_to_best_hi"] == 0.0 and best["p_worse_than_best"] == 0.0
    assert other["test_ppl_lo"] <= other["test_ppl"] <= other["test_ppl_hi"]
    assert best["note"] is None and other["note"] is None


def test_runs_without_test_scores_get_no_interval(tmp_path):
    c = corpus(tmp_path, "v", None)
    paths = [train(api.TrainRequest(model=m, corpus=c, output=tmp_path / m[-3:], progress=False))
             for m in ("ngram:kn2", "ngram:wb2")]
    for row in compare_runs(paths, bootstrap=10):
        assert row["note"] == "no test score, no confidence interval" and row["test_ppl_lo"] is None


def test_add_intervals_defaults_to_seed_zero_and_refuses_different_sequences(lineup, runs):
    paths = [lineup["ngram:laplace2"], lineup["ngram:kn2"]]

    def fresh_rows():
        by_run = {r["run"]: r for r in compare_runs(paths)}
        return [dict(by_run[str(p)]) for p in paths]

    a, b = fresh_rows(), fresh_rows()
    add_intervals(a, read_runs(paths), 25)
    add_intervals(b, read_runs(paths), 25, seed=0)
    assert [r["test_ppl_lo"] for r in a] == [r["test_ppl_lo"] for r in b]
    # runs scored on different files (compare_runs refuses them before this point)
    mixed = [runs["ngram:kn2"], runs["other-test"], runs["ngram:wb2"]]
    by_run = {}
    for p in mixed:
        by_run.update({r["run"]: r for r in compare_runs([p])})
    rows = [dict(by_run[str(p)]) for p in mixed]
    with pytest.raises(IncomparableError, match=f"^{runs['ngram:kn2']} and {runs['other-test']} stored "
                                                r"per-sequence scores of different sequences \(token counts "
                                                "differ\\); they cannot be resampled together$"):
        add_intervals(rows, read_runs(mixed), 10)
    swapped = [runs["ngram:kn2"], runs["ngram:wb2"], runs["other-test"]]
    rows = [dict(by_run[str(p)]) for p in swapped]
    with pytest.raises(IncomparableError, match=f"^{runs['ngram:kn2']} and {runs['other-test']} stored"):
        add_intervals(rows, read_runs(swapped), 10)


def test_protocol_refusal_lists_every_differing_field(tmp_path, runs):
    c = corpus(tmp_path, "p")
    other = train(api.TrainRequest(model="ngram:kn2", corpus=c, output=tmp_path / "s", context="stream",
                                       lowercase=True, progress=False))
    with pytest.raises(IncomparableError, match=r"protocol differs \(lowercase False vs True, context sentence "
                                                r"vs stream\)|protocol differs \(context sentence vs stream, "
                                                r"lowercase False vs True\)"):
        compare_runs([runs["ngram:kn2"], other])


def test_best_cells_count_a_row_without_the_flag_as_normalised_and_sort_one_row():
    assert best_cells([{"test_ppl": 9.0, "normalised": True}, {"test_ppl": 3.0}]) == {"test_ppl": 1}
    assert sort_rows([{"a": 1.0}], "-a") == [{"a": 1.0}]


# -- rows of edited run records: interrupted, unchecked, failed checks ----------------------------------------
def copy_run(src: Path, dst: Path, **changes) -> Path:
    import json
    import shutil

    shutil.copytree(src, dst)
    record = json.loads((dst / "run.json").read_text())
    record.update(changes)
    (dst / "run.json").write_text(json.dumps(record))
    return dst


def test_notes_for_unchecked_failed_and_interrupted_runs(runs, tmp_path):
    kn = runs["ngram:kn2"]
    unchecked = copy_run(kn, tmp_path / "unchecked", checks={})
    failed = copy_run(kn, tmp_path / "failed", checks={"ok": False})
    no_ok = copy_run(kn, tmp_path / "no-ok", checks={"tests": []})
    partly = copy_run(kn, tmp_path / "partly", status="interrupted")
    rows = {Path(r["run"]).name: r for r in compare_runs([kn, unchecked, failed, no_ok, partly])}
    assert rows["unchecked"]["note"] == "unchecked"
    assert rows["failed"]["note"] == "check failed" and rows["no-ok"]["note"] == "check failed"
    assert rows["partly"]["note"] == "partly trained" and rows["partly"]["status"] == "interrupted"
    assert rows[kn.name]["note"] is None


def test_a_model_row_is_interrupted_if_any_of_its_runs_is_and_keeps_every_note(runs, tmp_path):
    kn = runs["ngram:kn2"]
    partly = copy_run(kn, tmp_path / "partly", status="interrupted")
    unchecked = copy_run(runs["ngram:wb2"], tmp_path / "unchecked", checks={})
    (row,) = compare_seeded([LineupRuns("m", (kn, partly, unchecked), (0, 1, 2))])
    assert row["status"] == "interrupted"
    assert row["note"] == "partly trained; unchecked; mean ± sd of seeds 0, 1, 2"
    assert row["rank"] == 1 and row["normalised"] is True


# -- several seeds: sorting, bootstrap columns, forwarding ----------------------------------------------------
@pytest.fixture(scope="module")
def long_runs(tmp_path_factory) -> dict:
    """Runs scored on a test file of 40 lines, so bootstrap intervals depend on the seed and the confidence."""
    root = tmp_path_factory.mktemp("kill-compare-long")
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate", "a dog sat"]
    c = corpus(root, "c", "\n".join(lines[i % 5] if i % 3 else "the bird saw a cat" for i in range(40)) + "\n")
    return {m: train(api.TrainRequest(model=m, corpus=c, output=root / m.replace(":", "-"), progress=False))
            for m in ("ngram:kn2", "ngram:wb2", "ngram:laplace2", "ngram:addk2")}


def test_seeded_rows_sort_and_carry_bootstrap_columns(long_runs):
    groups = [LineupRuns("a", (long_runs["ngram:kn2"], long_runs["ngram:wb2"]), (0, 1)),
              LineupRuns("b", (long_runs["ngram:laplace2"],), (0,))]
    rows = compare_seeded(groups, "-test_ppl", bootstrap=40, seed=3, confidence=0.8)
    assert [r["test_ppl"] for r in rows] == sorted((r["test_ppl"] for r in rows), reverse=True)
    cols = list(rows[0])
    i = cols.index("test_ppl_sd")
    assert cols[i + 1:i + 6] == ["test_ppl_lo", "test_ppl_hi", "diff_to_best_lo", "diff_to_best_hi",
                                 "p_worse_than_best"]
    by_model = {r["seeds"]: r for r in rows}
    assert "bootstrap interval of the seed-0 run only" in by_model[2]["note"]
    assert "bootstrap interval" not in by_model[1]["note"]
    # compare_trained hands every argument on when any model has several seeds
    assert compare_trained(groups, "-test_ppl", bootstrap=40, seed=3, confidence=0.8) == rows
    other = compare_seeded(groups, "-test_ppl", bootstrap=40, seed=4, confidence=0.5)
    assert [r["test_ppl_lo"] for r in other] != [r["test_ppl_lo"] for r in rows]


def test_seeded_rows_without_a_test_file_rank_by_valid_perplexity(tmp_path):
    c = corpus(tmp_path, "v", None)
    a = train(api.TrainRequest(model="ngram:laplace2", corpus=c, output=tmp_path / "a", progress=False))
    b = train(api.TrainRequest(model="ngram:kn2", corpus=c, output=tmp_path / "b", progress=False))
    rows = compare_seeded([LineupRuns("a", (a,), None), LineupRuns("b", (b,), None)])
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["valid_ppl"] < rows[1]["valid_ppl"]


def test_interval_defaults_and_the_reference_without_scores(long_runs, tmp_path):
    from lmkit.evaluate.per_sequence import TEST_SCORES_FILE

    paths = [long_runs["ngram:kn2"], long_runs["ngram:laplace2"]]
    by_run = {r["run"]: r for r in compare_runs(paths)}
    a, b = [dict(by_run[str(p)]) for p in paths], [dict(by_run[str(p)]) for p in paths]
    add_intervals(a, read_runs(paths), 60)
    add_intervals(b, read_runs(paths), 60, seed=0, confidence=0.95)
    assert a == b
    c = [dict(by_run[str(p)]) for p in paths]
    add_intervals(c, read_runs(paths), 60, seed=1)
    assert [r["test_ppl_lo"] for r in c] != [r["test_ppl_lo"] for r in a]
    # the best model lost its per-sequence scores: the next one is the reference, and says so
    best = min(by_run.values(), key=lambda r: r["rank"])["run"]
    bare = copy_run(Path(best), tmp_path / "bare")
    (bare / TEST_SCORES_FILE).unlink()
    others = [p for p in paths if str(p) != best]
    rows = {r["run"]: r for r in compare_runs([bare, *others], bootstrap=20)}
    ref = rows[str(others[0])]
    assert ref["note"] == "bootstrap reference: the best model with per-sequence scores"
    assert ref["diff_to_best_lo"] == ref["diff_to_best_hi"] == 0.0


# -- rows of hand-written run records: exact values, fallbacks, order, refusals -------------------------------
# compare reads run.json only (no weights), so a record written here is a run as far as compare is concerned.
# Each keeps the template run's data entries (same files), protocol and vocabulary: all are comparable.
def fake_run(root: Path, name: str, template: Path, **changes) -> Path:
    import json

    record = json.loads((template / "run.json").read_text())
    record.update(changes)
    d = root / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps(record))
    return d


def scored(test: float | None = None, valid: float | None = None, **more) -> dict:
    """A metrics entry with only perplexities (no counts, so nothing is re-derived from an NLL)."""
    out = {}
    if test is not None:
        out["test"] = {"perplexity": test, "normalised": True, **more}
    if valid is not None:
        out["valid"] = {"perplexity": valid, "normalised": True}
    return out


def test_a_row_holds_exactly_the_recorded_numbers(runs, tmp_path):
    kn = runs["ngram:kn2"]
    run = fake_run(tmp_path, "a", kn, label="fake:a", kind="ngram", parameters=123, train_seconds=2.5,
                   tokens_seen=1000, fit_info={"train_seconds": 9.0, "tokens_seen": 9, "best_valid_ppl": 9.0},
                   metrics={"valid": {"perplexity": 45.0, "normalised": True},
                            "test": {"perplexity": 40.0, "perplexity_excl_oov": 38.0, "cross_entropy_bits": 5.25,
                                     "tokens_per_second": 900.0, "normalised": True},
                            "bleu": {"score": 12.5, "signature": "nrefs:1"}})
    (row,) = compare_runs([run])
    assert row == {"rank": 1, "model": "fake:a", "kind": "ngram", "status": "complete", "normalised": True,
                   "parameters": 123, "train_seconds": 2.5, "tokens_seen": 1000, "valid_ppl": 45.0,
                   "test_ppl": 40.0, "test_ppl_excl_oov": 38.0, "test_bits_per_token": 5.25, "bleu": 12.5,
                   "bleu_signature": "nrefs:1", "tokens_per_second": 900.0, "note": None, "run": str(run)}


def test_rows_fall_back_to_fit_info_only_where_the_record_has_nothing(runs, tmp_path):
    kn = runs["ngram:kn2"]
    fit = {"best_valid_ppl": 12.5, "train_seconds": 3.5, "tokens_seen": 700}
    # stopped before its valid score and before the record's own counters were written: fit_info fills them
    stopped = fake_run(tmp_path, "stopped", kn, status="interrupted", metrics=scored(30.0), train_seconds=0.0,
                       tokens_seen=0, fit_info=fit)
    # stopped with its own numbers: they win over fit_info
    own = fake_run(tmp_path, "own", kn, status="interrupted", metrics=scored(31.0, 20.0), train_seconds=2.0,
                   tokens_seen=500, fit_info=fit)
    # complete without a valid score: the best checkpoint's valid perplexity is not a complete run's score
    complete = fake_run(tmp_path, "complete", kn, metrics=scored(32.0), tokens_seen=0,
                        fit_info={"best_valid_ppl": 12.5})
    rows = {Path(r["run"]).name: r for r in compare_runs([complete, own, stopped])}
    assert [rows[n]["valid_ppl"] for n in ("stopped", "own", "complete")] == [12.5, 20.0, None]
    assert [rows[n]["train_seconds"] for n in ("stopped", "own")] == [3.5, 2.0]
    assert [rows[n]["tokens_seen"] for n in ("stopped", "own", "complete")] == [700, 500, 0]
    assert [rows[n]["rank"] for n in ("stopped", "own", "complete")] == [1, 2, 3]
    assert rows["stopped"]["note"] == rows["own"]["note"] == "partly trained"
    assert rows["complete"]["note"] is None and rows["complete"]["status"] == "complete"


def test_a_record_without_the_normalised_flag_counts_as_normalised(runs, tmp_path):
    kn = runs["ngram:kn2"]
    old = fake_run(tmp_path, "old", kn, metrics={"test": {"perplexity": 30.0}, "valid": {"perplexity": 33.0}})
    # the flag is read from the test score even when there is no valid score
    test_only = fake_run(tmp_path, "test-only", kn, metrics={"test": {"perplexity": 5.0, "normalised": False}})
    rows = {Path(r["run"]).name: r for r in compare_runs([test_only, old])}
    assert rows["old"]["normalised"] is True and rows["old"]["rank"] == 1 and rows["old"]["note"] is None
    assert rows["test-only"]["normalised"] is False and rows["test-only"]["rank"] is None
    assert rows["test-only"]["note"] == "not normalised, not ranked"


def test_every_note_of_one_row_is_kept_in_order(runs, tmp_path):
    kn = runs["ngram:kn2"]
    two = fake_run(tmp_path, "two", kn, status="interrupted", checks={})
    four = fake_run(tmp_path, "four", kn, status="interrupted", checks={"ok": False},
                    metrics={"test": {"perplexity": None, "normalised": False}})
    rows = {Path(r["run"]).name: r for r in compare_runs([two, four])}
    assert rows["two"]["note"] == "partly trained; unchecked"
    assert rows["four"]["note"] == ("not normalised, not ranked; partly trained; infinite test perplexity; "
                                    "check failed")


def test_default_order_is_ranked_then_unscored_then_not_normalised(runs, tmp_path):
    kn = runs["ngram:kn2"]
    infinite = fake_run(tmp_path, "infinite", kn, metrics={"test": {"perplexity": None, "normalised": True}})
    stupid = fake_run(tmp_path, "stupid", kn, metrics={"test": {"perplexity": 5.0, "normalised": False}})
    worse = fake_run(tmp_path, "worse", kn, metrics=scored(30.0))
    better = fake_run(tmp_path, "better", kn, metrics=scored(20.0))
    rows = compare_runs([infinite, stupid, worse, better])
    assert [Path(r["run"]).name for r in rows] == ["better", "worse", "infinite", "stupid"]
    assert [r["rank"] for r in rows] == [1, 2, None, None]
    assert [r["test_ppl"] for r in rows] == [20.0, 30.0, None, 5.0]


def test_rank_follows_test_perplexity_when_valid_disagrees(runs, tmp_path):
    kn = runs["ngram:kn2"]
    a = fake_run(tmp_path, "a", kn, label="a", metrics=scored(30.0, 50.0))  # better on test, worse on valid
    b = fake_run(tmp_path, "b", kn, label="b", metrics=scored(40.0, 45.0))
    rows = compare_runs([b, a])
    assert [(r["model"], r["rank"]) for r in rows] == [("a", 1), ("b", 2)]
    rows = compare_seeded([LineupRuns("b", (b,), None), LineupRuns("a", (a,), None)])
    assert [(r["model"], r["rank"]) for r in rows] == [("a", 1), ("b", 2)]


def test_refusal_names_every_difference_of_one_run_exactly(runs, tmp_path):
    import copy
    import json

    kn = runs["ngram:kn2"]
    record = json.loads((kn / "run.json").read_text())
    data = copy.deepcopy(record["data"])
    data["test"].update(path="elsewhere/test.txt", sha256="ab" * 32)
    data["valid"].update(path="elsewhere/valid.txt", sha256="cd" * 32)
    other = fake_run(tmp_path, "other", kn, data=data, vocab_id="0123456789abcdef")
    t, v = record["data"]["test"], record["data"]["valid"]
    # another vocabulary is no refusal by itself (bits per byte compares across them); other files are
    expected = (f"{kn} and {other} were not measured the same way: "
                f"test file differs ({t['path']} sha256 {t['sha256'][:12]} vs elsewhere/test.txt sha256 abababababab); "
                f"valid file differs ({v['path']} sha256 {v['sha256'][:12]} vs elsewhere/valid.txt sha256 "
                "cdcdcdcdcdcd); runs of different levels or vocabularies meet only on the same files read the same "
                "way (bits per byte)")
    with pytest.raises(IncomparableError) as err:
        compare_runs([kn, other])
    assert str(err.value) == expected
    missing = fake_run(tmp_path, "missing", kn, data={**record["data"], "valid": None})
    with pytest.raises(IncomparableError) as err:
        compare_runs([kn, missing])
    assert str(err.value) == (f"{kn} and {missing} were not measured the same way: valid file differs "
                              f"({v['path']} sha256 {v['sha256'][:12]} vs none); only runs with the same "
                              "protocol, vocabulary and evaluation files can be compared")


def test_read_refusals_are_worded_exactly(runs, tmp_path):
    with pytest.raises(UsageError) as err:
        compare_runs([])
    assert str(err.value) == "give at least one run folder to compare"
    busy = fake_run(tmp_path, "busy", runs["ngram:kn2"], status="training")
    with pytest.raises(ModelError) as err:
        compare_runs([runs["ngram:kn2"], busy])
    assert str(err.value) == (f"{busy}: this run is still training or never finished writing (status 'training'); "
                              "wait for it, or resume it with lmkit train --resume")


def test_a_model_row_leaves_a_column_empty_if_any_seed_left_it_empty(runs, tmp_path):
    kn = runs["ngram:kn2"]
    a = fake_run(tmp_path, "a", kn, label="m", metrics=scored(30.0, 40.0))
    b = fake_run(tmp_path, "b", kn, label="m", metrics={"test": {"perplexity": None, "normalised": True},
                                                        "valid": {"perplexity": 44.0, "normalised": True}})
    c = fake_run(tmp_path, "c", kn, label="k", metrics=scored(35.0, 41.0))
    rows = compare_seeded([LineupRuns("m", (a, b), (0, 1)), LineupRuns("k", (c,), None)])
    m, k = rows[1], rows[0]
    assert (m["model"], m["rank"], m["test_ppl"], m["test_ppl_sd"]) == ("m", None, None, None)
    assert m["valid_ppl"] == 42.0 and m["valid_ppl_sd"] == pytest.approx(statistics.stdev([40.0, 44.0]), rel=1e-12)
    assert m["note"] == "infinite test perplexity; mean ± sd of seeds 0, 1"
    assert (k["model"], k["rank"], k["test_ppl"], k["seeds"]) == ("k", 1, 35.0, 1)
    assert k["note"] == "deterministic: trained once, no sd"


def test_a_model_row_of_runs_that_saw_no_tokens_says_zero(runs, tmp_path):
    kn = runs["ngram:kn2"]
    group = tuple(fake_run(tmp_path, f"s{i}", kn, tokens_seen=0, fit_info={}) for i in range(2))
    (row,) = compare_seeded([LineupRuns("m", group, (0, 1))])
    assert row["tokens_seen"] == 0 and type(row["tokens_seen"]) is int


def test_interval_notes_of_records_without_a_usable_test_score(long_runs, tmp_path):
    import json

    kn = long_runs["ngram:kn2"]
    # a test file recorded but never scored
    unscored = fake_run(tmp_path, "unscored", kn, metrics={})
    (row,) = compare_runs([unscored], bootstrap=10)
    assert row["note"] == "no test score, no confidence interval" and row["test_ppl_lo"] is None
    # per-sequence scores present and finite, but the record has no test perplexity: no interval either
    bare = copy_run(kn, tmp_path / "bare")
    record = json.loads((bare / "run.json").read_text())
    del record["metrics"]["test"]["perplexity"]
    (bare / "run.json").write_text(json.dumps(record))
    (row,) = compare_runs([bare], bootstrap=10)
    assert row["test_ppl"] is None and row["test_ppl_lo"] is None and row["p_worse_than_best"] is None
    assert row["note"] == "infinite test perplexity; no confidence interval"


# -- bootstrap arguments and columns of compare_runs / compare_seeded / compare_trained --------------------------
BASE = ["rank", "model", "kind", "status", "normalised", "parameters", "train_seconds", "tokens_seen", "valid_ppl",
        "test_ppl", "test_ppl_excl_oov", "test_bits_per_token", "bits_per_byte", "word_ppl", "unk_bytes", "bleu",
        "tokens_per_second", "note", "run"]
INTERVALS = ["test_ppl_lo", "test_ppl_hi", "diff_to_best_lo", "diff_to_best_hi", "p_worse_than_best"]


def test_compare_runs_interval_defaults_confidence_and_columns(long_runs):
    paths = [long_runs["ngram:kn2"], long_runs["ngram:laplace2"], long_runs["ngram:wb2"]]
    rows = compare_runs(paths, bootstrap=40)
    at = BASE.index("test_ppl") + 1
    assert list(rows[0]) == BASE[:at] + INTERVALS + BASE[at:]
    assert rows == compare_runs(paths, bootstrap=40, seed=0, confidence=0.95)
    assert [r["test_ppl_lo"] for r in compare_runs(paths, bootstrap=40, seed=1)] != [r["test_ppl_lo"] for r in rows]
    narrow = compare_runs(paths, bootstrap=40, confidence=0.5)
    assert [r["test_ppl_lo"] for r in narrow] != [r["test_ppl_lo"] for r in rows]
    for wide, n in zip(rows, narrow):
        assert wide["test_ppl_lo"] <= n["test_ppl_lo"] <= n["test_ppl_hi"] <= wide["test_ppl_hi"]
    assert list(compare_runs(paths)[0]) == BASE


def test_compare_seeded_interval_defaults_and_columns(long_runs):
    groups = [LineupRuns("a", (long_runs["ngram:kn2"], long_runs["ngram:wb2"]), (0, 1)),
              LineupRuns("b", (long_runs["ngram:laplace2"],), None)]
    rows = compare_seeded(groups, bootstrap=40)
    seeded = BASE[:5] + ["seeds"] + BASE[5:9] + ["valid_ppl_sd", "test_ppl", "test_ppl_sd"] + BASE[10:]
    at = seeded.index("test_ppl_sd") + 1
    assert list(rows[0]) == seeded[:at] + INTERVALS + seeded[at:]
    assert list(compare_seeded(groups)[0]) == seeded
    assert rows == compare_seeded(groups, bootstrap=40, seed=0, confidence=0.95)
    assert compare_trained(groups, bootstrap=40) == rows
    assert [r["test_ppl_lo"] for r in compare_seeded(groups, bootstrap=40, seed=1)] != [r["test_ppl_lo"] for r in rows]


def test_compare_trained_with_one_run_per_model_is_compare_runs_with_every_argument(long_runs):
    groups = [LineupRuns(m, (long_runs[m],), (0,)) for m in ("ngram:kn2", "ngram:laplace2", "ngram:wb2")]
    paths = [g.runs[0] for g in groups]
    rows = compare_trained(groups, "-test_ppl", bootstrap=40, seed=3, confidence=0.8)
    assert rows == compare_runs(paths, "-test_ppl", bootstrap=40, seed=3, confidence=0.8)
    assert [r["test_ppl"] for r in rows] == sorted((r["test_ppl"] for r in rows), reverse=True)
    assert rows != compare_runs(paths, "-test_ppl", bootstrap=40, seed=3)  # the confidence is passed on
    assert rows != compare_runs(paths, "-test_ppl", bootstrap=40, seed=0, confidence=0.8)  # and the seed
    assert compare_trained(groups, bootstrap=40) == compare_runs(paths, bootstrap=40, seed=0, confidence=0.95)
    assert "test_ppl_lo" not in compare_trained(groups)[0]


def test_a_model_row_is_normalised_only_if_every_seed_run_is(runs, tmp_path):
    kn = runs["ngram:kn2"]
    a = fake_run(tmp_path, "a", kn, metrics=scored(30.0, 40.0))
    b = fake_run(tmp_path, "b", kn, metrics={"test": {"perplexity": 20.0, "normalised": False}})
    (row,) = compare_seeded([LineupRuns("m", (a, b), (0, 1))])
    assert row["normalised"] is False and row["rank"] is None
    assert row["note"] == "not normalised, not ranked; mean ± sd of seeds 0, 1"


def test_a_model_row_lists_each_note_of_its_runs_once(runs, tmp_path):
    kn = runs["ngram:kn2"]
    a = fake_run(tmp_path, "a", kn, status="interrupted", checks={})  # partly trained; unchecked
    b = fake_run(tmp_path, "b", kn, checks={})  # unchecked
    (row,) = compare_seeded([LineupRuns("m", (a, b), (0, 1))])
    assert row["note"] == "partly trained; unchecked; mean ± sd of seeds 0, 1"


def test_compare_seeded_passes_the_confidence_on(long_runs):
    groups = [LineupRuns("a", (long_runs["ngram:kn2"], long_runs["ngram:wb2"]), (0, 1)),
              LineupRuns("b", (long_runs["ngram:laplace2"],), None)]
    wide, narrow = compare_seeded(groups, bootstrap=40), compare_seeded(groups, bootstrap=40, confidence=0.5)
    assert [r["test_ppl_lo"] for r in narrow] != [r["test_ppl_lo"] for r in wide]
    for w, n in zip(wide, narrow):
        assert w["test_ppl_lo"] <= n["test_ppl_lo"] <= n["test_ppl_hi"] <= w["test_ppl_hi"]
