"""--time-budget bounds the whole command: the final measurement is estimated and reserved up front, the quick
checks give way when it cannot fit, the last validation's valid score is the final one, and a long run without
a budget says so. No wall-clock asserts: the reserve arithmetic is checked on its own and on what run.json records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmkit import api
from lmkit.training.budget import (CHECK_PASSES, CHECK_SAMPLE, WRITE_SECONDS, Clock, Reserve, checks_skipped,
                                   training_limit, validation_interval)
from lmkit.training.config import TrainConfig
from lmkit.training.plan import Plan
from lmkit.training.state import LoopState
from clitools import cli, word_corpus

LSTM = {"layers": 1, "hidden": 16, "embed": 8}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return word_corpus(tmp_path / "corpus", step=(7, 3), lengths=(4, 5))


def train_lstm(corpus: Path, out: Path, log=None, **train_options) -> dict:
    options = {"batch_size": 4, "seq_len": 8, "warmup_steps": 1, "device": "cpu", "threads": 1, **train_options}
    req = api.TrainRequest(model="lstm", corpus=corpus, output=out, progress=False, min_count=1, context="stream",
                           options=LSTM, train_options=options)
    api.train(req, log=log or (lambda _: None))
    return json.loads((out / "run.json").read_text())


# -- the arithmetic --------------------------------------------------------------------------------------
def test_the_reserve_counts_valid_test_checks_and_writing():
    r = Reserve(rate=0.001, valid_tokens=1000, test_tokens=3000)
    checks = 0.001 * CHECK_PASSES * CHECK_SAMPLE
    assert r.validation() == pytest.approx(1.0)
    assert r.final() == pytest.approx(1.0 + 3.0 + checks + WRITE_SECONDS)
    r.checks = False
    assert r.final() == pytest.approx(4.0 + WRITE_SECONDS)
    # a test split smaller than the checks' sample: they score what there is
    assert Reserve(0.001, 50, 100).checking() == pytest.approx(0.001 * CHECK_PASSES * 100)


def test_the_reserve_and_the_time_already_spent_are_subtracted_from_training():
    r = Reserve(rate=0.001, valid_tokens=1000, test_tokens=2000, checks=False)  # final(): 3 s + writing
    assert training_limit(20.0, 2.0, 0.0, r) == pytest.approx(20.0 - 2.0 - 3.0 - WRITE_SECONDS)
    # later in the run: the training seconds so far plus what is left after the reserve
    assert training_limit(20.0, 10.0, 6.0, r) == pytest.approx(6.0 + 20.0 - 10.0 - 3.0 - WRITE_SECONDS)
    # nothing left: training stops where it is; the budget also caps the total training time
    assert training_limit(20.0, 19.0, 6.0, r) == 6.0
    assert training_limit(20.0, 0.0, 18.0, Reserve(0.0, 0, 0, checks=False)) == 20.0


def test_validations_are_spaced_so_they_do_not_eat_the_budget():
    fast = Reserve(rate=1e-6, valid_tokens=1000, test_tokens=0)
    assert validation_interval(100.0, 0.0, fast) == pytest.approx(30.0)  # min(30, share/2) > share/10
    assert validation_interval(1000.0, 0.0, fast) == pytest.approx(100.0)  # about ten per run
    slow = Reserve(rate=0.01, valid_tokens=1000, test_tokens=0)  # 10 s per validation
    assert validation_interval(100.0, 0.0, slow) == pytest.approx(30.0)  # at most a quarter of the time
    assert validation_interval(100.0, 0.0, slow, previous=50.0) == 50.0  # later: only ever widened
    assert validation_interval(100.0, 0.0, Reserve(0.02, 1000, 0), previous=50.0) == pytest.approx(60.0)


def test_checks_are_skipped_when_the_budget_has_no_room_for_them():
    clock = Clock(started=0.0, valid_tokens=100, test_tokens=100)
    import time

    clock.started = time.monotonic()
    roomy = {"seconds": 1e6, "seconds_per_token": 1e-6, "checks": True}
    assert checks_skipped(roomy, clock) is None
    assert checks_skipped(None, clock) is None  # no budget: they always run
    assert "--time-budget" in checks_skipped({**roomy, "checks": False}, clock)
    assert "--time-budget" in checks_skipped({**roomy, "seconds": 0.5}, clock)  # less than WRITE_SECONDS left
    clock.started -= 9.5  # 0.5 s of a 10 s budget left, 1.5 s with the 10 % tolerance: enough for writing
    assert checks_skipped({**roomy, "seconds": 10.0}, clock) is None
    clock.started -= 1.0  # 0.5 s with the tolerance
    assert "--time-budget" in checks_skipped({**roomy, "seconds": 10.0}, clock)


def test_the_time_limit_stops_training_not_the_raw_budget():
    plan = Plan.build(TrainConfig(time_budget=20.0), steps_per_epoch=10, tokens_per_epoch=100)
    s = LoopState(step=5, train_seconds=12.0)
    assert plan.exhausted(s) is None
    plan.time_limit = 11.0  # what the reserve left
    assert plan.exhausted(s) == "time"
    assert plan.fraction_done(LoopState(step=5, train_seconds=11.0)) == 1.0  # decayed by the limit
    assert plan.exhausted(LoopState(step=0, train_seconds=12.0)) is None  # always at least one step


# -- runs --------------------------------------------------------------------------------------------------
def test_a_budgeted_run_records_its_reserve_and_trains_within_what_it_left(corpus, tmp_path):
    record = train_lstm(corpus, tmp_path / "run", time_budget=60.0, max_tokens=128)  # whichever ends first
    budget = record["fit_info"]["budget"]
    assert budget["seconds"] == 60.0 and budget["seconds_per_token"] > 0
    assert budget["reserve_seconds"] >= WRITE_SECONDS
    # the limit is the time left after the reserve: never more than the budget less the reserve
    assert budget["training_limit"] <= 60.0 - budget["reserve_seconds"] + 1e-9
    assert record["fit_info"]["stopped"] in ("time", "steps", "tokens")
    assert record["checks"]["ok"] is True and budget["checks"] is True


def test_a_budget_too_short_for_the_final_scoring_warns_skips_the_checks_and_still_trains(corpus, tmp_path):
    said: list[str] = []
    record = train_lstm(corpus, tmp_path / "run", log=said.append, time_budget=0.01)
    assert record["fit_info"]["step"] >= 1 and record["fit_info"]["stopped"] == "time"
    assert record["fit_info"]["budget"]["checks"] is False
    results = record["checks"]["results"]
    assert len(results) == 4 and {r["status"] for r in results.values()} == {"n.a."}
    assert all("--time-budget" in r["evidence"] for r in results.values())
    assert any(line.startswith("warning: --time-budget") and "too short" in line for line in said), said
    assert record["metrics"]["test"]["perplexity"] > 1  # the run is still measured and written


def test_the_last_validation_is_the_final_valid_score(corpus, tmp_path, monkeypatch):
    from lmkit.pipeline import measure

    scored: list[str] = []
    real = measure.score_encoded
    def counted(model, enc, **kw):
        scored.append(enc.name)
        return real(model, enc, **kw)

    monkeypatch.setattr(measure, "score_encoded", counted)
    record = train_lstm(corpus, tmp_path / "run", max_tokens=64)
    assert scored == [str(corpus / "test.txt")]  # valid was not scored a second time
    valid = record["metrics"]["valid"]
    assert valid["perplexity"] == record["fit_info"]["best_valid_ppl"] and valid["score_seconds"] > 0
    again = api.score(tmp_path / "run", corpus / "valid.txt", device="cpu").score  # the same number, measured anew
    assert again.perplexity == pytest.approx(valid["perplexity"], rel=1e-12)
    assert again.tokens == valid["tokens"]


def test_when_the_last_validation_is_not_the_best_the_best_one_is_the_final_valid_score(corpus, tmp_path):
    # a far too high learning rate and patience 1: the third validation is worse, training stops there
    record = train_lstm(corpus, tmp_path / "run", max_tokens=160, eval_every=1, lr=10.0, schedule="constant",
                        patience=1)
    curve = [json.loads(line)["valid_ppl"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["fit_info"]["stopped"] == "early-stopping" and curve[-1] > min(curve)
    assert record["metrics"]["valid"]["perplexity"] == min(curve) == record["fit_info"]["best_valid_ppl"]


def test_a_long_run_without_a_budget_says_so_before_going_on(corpus, tmp_path, monkeypatch):
    import lmkit.train

    said: list[str] = []
    train_lstm(corpus, tmp_path / "fast", log=said.append, max_tokens=128)
    assert not any("this run will take" in line for line in said)  # a few seconds: nothing to say
    monkeypatch.setattr(lmkit.train, "LONG_RUN_SECONDS", 0.0)
    said.clear()
    train_lstm(corpus, tmp_path / "long", log=said.append, max_tokens=128)
    warning = [line for line in said if "this run will take about" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ")
    assert "--time-budget" in warning[0] and "--max-tokens" in warning[0] and "--epochs" in warning[0]
    assert said.index(warning[0]) < len(said) - 3  # before training went on: the final numbers come after it
    said.clear()
    train_lstm(corpus, tmp_path / "budgeted", log=said.append, time_budget=60.0, max_tokens=128)
    assert not any("this run will take" in line for line in said)  # a budget bounds it already


def test_the_long_run_warning_is_one_stderr_line_and_a_json_warning(corpus, tmp_path, monkeypatch):
    import lmkit.train

    monkeypatch.setattr(lmkit.train, "LONG_RUN_SECONDS", 0.0)
    args = ["train", "--model", "lstm", "--corpus", corpus, "--layers", 1, "--hidden", 16, "--min-count", 1,
            "--max-tokens", 128, "--batch-size", 4, "--seq-len", 8, "--device", "cpu", "--threads", 1]
    result = cli(*args, "-o", tmp_path / "text")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "text")
    lines = [line for line in result.stderr.splitlines() if "this run will take about" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    result = cli(*args, "-o", tmp_path / "json", "--log-format", "json")
    warnings = [e for e in map(json.loads, result.stderr.splitlines()) if e["event"] == "message"
                and e["level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["text"].startswith("this run will take about")
