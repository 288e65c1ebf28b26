"""Training that diverges (NaN/inf loss) stops cleanly: the best weights before it are the result, or, with
none kept yet, one clear error; never a crash while writing NaN into run.json or metrics.jsonl.

The NaN is injected into the training loss (the network itself is untouched), from a chosen step on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmkit import api, train
from lmkit.errors import ModelError


def _poison_training_loss(monkeypatch: pytest.MonkeyPatch, from_call: int) -> None:
    real = train.forward_target_logprobs
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        logprobs, state = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= from_call:
            logprobs = logprobs * torch.tensor(float("nan"))
        return logprobs, state

    monkeypatch.setattr(train, "forward_target_logprobs", poisoned)


def _train(corpus: Path, out: Path, messages: list[str]) -> Path:
    request = api.TrainRequest(model="mlp", corpus=corpus, output=out, progress=False,
                               options={"embed": 8, "hidden": 16},
                               train_options={"max_tokens": 3000, "batch_size": 4, "eval_every": 20, "threads": 1})
    return api.train(request, log=messages.append)


def test_divergence_after_validations_keeps_the_best_weights(tiny_corpus: Path, tmp_path: Path, monkeypatch):
    _poison_training_loss(monkeypatch, from_call=50)
    messages: list[str] = []
    out = _train(tiny_corpus, tmp_path / "run", messages)
    record = json.loads((out / "run.json").read_text())  # strict JSON: no NaN was written
    assert record["status"] == "complete"
    assert record["fit_info"]["stopped"] == "diverged"
    assert record["fit_info"]["best_step"] <= 40 < record["fit_info"]["step"] <= 60
    assert all(v == v and v < float("inf") for v in (record["metrics"]["valid"]["perplexity"],
                                                      record["metrics"]["test"]["perplexity"]))
    assert any(m.startswith("warning: training diverged at step") for m in messages)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["valid_ppl"] is not None for r in rows)
    assert api.score(out, tiny_corpus / "test.txt").score.perplexity == pytest.approx(
        record["metrics"]["test"]["perplexity"], rel=1e-9)


def test_divergence_before_any_validation_is_one_clear_error(tiny_corpus: Path, tmp_path: Path, monkeypatch):
    _poison_training_loss(monkeypatch, from_call=1)
    with pytest.raises(ModelError, match=r"training diverged at step 1 \(.* lower --lr"):
        _train(tiny_corpus, tmp_path / "run", [])
