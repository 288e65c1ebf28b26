"""Progress people and scripts can read: phases, a time-based refresh, --quiet, --log-format json; and the
metrics.jsonl train loss, the mean over the steps since the previous record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lmkit import api, logs
from lmkit.training.progress import Ticker
from clitools import cli, word_corpus

NET = ["--layers", 1, "--hidden", 16, "--min-count", 1, "--batch-size", 4, "--seq-len", 8, "--device", "cpu",
       "--threads", 1, "--warmup", 1]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return word_corpus(tmp_path / "corpus", step=(5, 7), lengths=(3, 6))


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


# -- metrics.jsonl ------------------------------------------------------------------------------------------
def curve(corpus: Path, out: Path, eval_every: int) -> list[dict]:
    req = api.TrainRequest(model="lstm", corpus=corpus, output=out, progress=False, min_count=1, context="stream",
                           options={"layers": 1, "hidden": 16, "dropout": 0.0},
                           train_options={"batch_size": 4, "seq_len": 8, "max_tokens": 192, "eval_every": eval_every,
                                          "warmup_steps": 1, "device": "cpu", "threads": 1})
    api.train(req)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_each_record_carries_the_mean_train_loss_since_the_previous_one(corpus, tmp_path):
    every_step = curve(corpus, tmp_path / "every", 1)  # one record per step: that step's loss
    losses = [r["train_loss"] for r in every_step]
    assert [r["step"] for r in every_step] == list(range(1, 7))
    assert len(set(losses)) == len(losses)  # a fresh number each time, not step 1's copied forward
    every_third = curve(corpus, tmp_path / "third", 3)  # the same steps (same seed, CPU), recorded twice
    assert [r["step"] for r in every_third] == [3, 6]
    assert every_third[0]["train_loss"] == pytest.approx(sum(losses[:3]) / 3, rel=1e-6)
    assert every_third[1]["train_loss"] == pytest.approx(sum(losses[3:]) / 3, rel=1e-6)


# -- reporters ------------------------------------------------------------------------------------------------
def test_the_refresh_is_time_based_and_cheap():
    ticker = Ticker(every=3600.0)
    assert ticker.due() and not ticker.due() and not ticker.due()  # one refresh, then none within the hour
    assert all(Ticker(every=0.0).due() for _ in range(3))


def test_json_progress_lines_are_throttled_but_phases_and_events_never():
    out = io.StringIO()
    rep = logs.JsonProgress(out)
    rep.phase("training", total=10, label="lstm")
    for step in range(1, 50):
        rep.update(step, step=step, loss=float("nan"))
    rep.event("validation", step=49, valid_ppl=12.5)
    rep.phase("scoring", label="test")
    rep.update(1)
    got = events(out.getvalue())
    assert [e["event"] for e in got] == ["phase", "progress", "validation", "phase", "progress"]
    assert got[1]["step"] == 1 and got[1]["loss"] is None  # JSON has no NaN
    assert got[0] == {**got[0], "phase": "training", "total": 10, "label": "lstm"}
    quiet = io.StringIO()
    rep = logs.JsonProgress(quiet, chatty=False)
    rep.phase("training")
    rep.message("warning: careful")
    assert [e["event"] for e in events(quiet.getvalue())] == ["message"]
    assert events(quiet.getvalue())[0]["level"] == "warning"


def test_the_reporter_follows_quiet_format_and_terminal():
    assert logs.reporter(quiet_=True) is logs.NOTHING
    assert isinstance(logs.reporter(log_format="json"), logs.JsonProgress)
    assert isinstance(logs.reporter(terminal=False), logs.LineProgress)
    bar = logs.reporter(terminal=True)
    try:
        assert isinstance(bar, logs.TerminalProgress)
    finally:
        bar.close()


def test_describe_shows_what_a_person_needs():
    text = logs.describe({"step": 120, "steps": 1400, "tokens_per_second": 1234.5, "loss": 5.8123, "valid_ppl": 312.4,
                          "eta_seconds": 72, "budget_seconds": 600})
    assert text == "step 120/1,400  1,234 tok/s  loss 5.812  valid ppl 312.40  1:12 left of 10:00"
    assert logs.clock(3723) == "1:02:03"


# -- the CLI ----------------------------------------------------------------------------------------------------
def test_log_format_json_gives_phases_progress_and_validations(corpus, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--model", "lstm", "--corpus", corpus, "-o", out, *NET, "--max-tokens", 128, "--eval-every", 2,
            "--log-format", "json")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)  # data on stdout only
    got = events(r.stderr)  # every stderr line is one JSON object
    phases = [e["phase"] for e in got if e["event"] == "phase"]
    for phase in ("reading", "training", "validating", "scoring", "checking", "writing"):
        assert phase in phases, phases
    progress = [e for e in got if e["event"] == "progress" and e["phase"] == "training"]
    assert progress and {"step", "tokens_per_second", "loss", "eta_seconds"} <= set(progress[0])
    validations = [e for e in got if e["event"] == "validation"]
    assert [v["step"] for v in validations] == [2, 4] and all(v["valid_ppl"] > 1 for v in validations)
    messages = [e for e in got if e["event"] == "message"]
    assert any(m["text"].startswith("test perplexity") for m in messages)


def test_quiet_and_json_quiet_say_nothing_but_warnings(corpus, tmp_path):
    for extra in ([], ["--log-format", "json"]):
        out = tmp_path / f"run{len(extra)}"
        r = cli("train", "--model", "lstm", "--corpus", corpus, "-o", out, *NET, "--max-tokens", 64, "-q", *extra)
        assert r.exit_code == 0, r.stderr
        assert r.stderr == "" and r.stdout.strip() == str(out)


def test_without_a_terminal_there_is_no_bar_but_a_line_per_validation(corpus, tmp_path):
    r = cli("train", "--model", "lstm", "--corpus", corpus, "-o", tmp_path / "run", *NET, "--max-tokens", 128,
            "--eval-every", 2)
    assert r.exit_code == 0, r.stderr
    assert "━" not in r.stderr and "\r" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("validation: ")]
    assert len(lines) == 2 and lines[0].startswith("validation: step 2/") and "tok/s" in lines[0], lines
    assert "valid ppl" in lines[0] and "left" in lines[0]


def test_a_bad_log_format_is_one_usage_line(corpus, tmp_path):
    from clitools import one_error_line

    one_error_line(cli("train", "--model", "lstm", "--corpus", corpus, "--log-format", "xml"), 2, "--log-format")


def test_ngram_counting_and_arpa_loading_report_progress(corpus, tmp_path):
    rep = logs.JsonProgress(io.StringIO())
    with logs.reporting(rep):
        run = api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=tmp_path / "kn3", progress=False))
    got = events(rep.out.getvalue())
    counting = [e for e in got if e.get("phase") == "counting"]
    assert counting[0]["event"] == "phase" and counting[0]["total"] == 3
    assert any(e["event"] == "progress" and e["done"] >= 1 for e in counting)
    arpa = tmp_path / "kn3.arpa"
    api.export_arpa(run, arpa)
    rep = logs.JsonProgress(io.StringIO())
    with logs.reporting(rep):
        api.score(arpa, corpus / "test.txt")
    loading = [e for e in events(rep.out.getvalue()) if e.get("phase") == "loading"]
    assert loading[0]["event"] == "phase" and loading[0]["total"] == arpa.stat().st_size
    done = [e["done"] for e in loading if e["event"] == "progress"]
    assert done and done == sorted(done) and 0 < done[0] and done[-1] <= arpa.stat().st_size
