"""The gated convolutional LM (lmkit/models/cnn.py): causality, its receptive field as the history, stream
scoring against a direct full-history computation, and run folders through the CLI like every family."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import cli, one_error_line

from lmkit import api
from lmkit.data.batching import stream_ids
from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import Vocab
from lmkit.models import torchlm
from lmkit.models.base import LanguageModel
from lmkit.models.cnn import CNNConfig, CNNModel, GatedCNNLM, block_dilations, receptive_field
from lmkit.protocol import Protocol

# (kernel, dilations, layers, norm) -> receptive field
SHAPES = [((2, (1, 2), 2, "layer"), 4), ((3, (1, 2, 4), 3, "weight"), 15), ((4, (), 2, "none"), 7),
          ((3, (1, 3), 3, "layer"), 1 + 2 * (1 + 3 + 1))]

WORDS = "the cat dog sat ran on a mat log bird saw ate old man tree river".split()


def text_corpus(folder: Path, lines: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", lines), ("valid", lines // 4), ("test", lines // 4)):
        rows = [" ".join(rng.choice(WORDS, size=rng.integers(3, 10))) for _ in range(n)]
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


def net_for(kernel, dilations, layers, norm, vocab=20, seed=0) -> GatedCNNLM:
    torch.manual_seed(seed)
    net = GatedCNNLM(CNNConfig(layers=layers, embed=8, kernel=kernel, dilations=dilations, norm=norm, dropout=0.0),
                     vocab).double().eval()
    for p in net.parameters():  # nothing at zero (biases start there): every tap carries signal
        p.data.add_(0.05 * torch.randn_like(p))
    return net


def logprobs(net: GatedCNNLM, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits, _ = net(torch.tensor([ids]))
    return torch.log_softmax(logits[0], dim=-1).numpy()  # (T, V)


# -- the receptive field -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,field", SHAPES)
def test_receptive_field_formula(shape, field):
    kernel, dilations, layers, norm = shape
    assert receptive_field(kernel, dilations, layers) == field
    config = CNNConfig(kernel=kernel, dilations=dilations, layers=layers, norm=norm)
    assert config.receptive_field == field and GatedCNNLM(config, 10).history == field


def test_defaults_dilations_cycle_and_a_given_field_must_agree():
    assert CNNConfig().receptive_field == 31  # 1 + 2 * (1 + 2 + 4 + 8)
    assert block_dilations((1, 2, 4, 8), 6) == [1, 2, 4, 8, 1, 2]
    assert CNNConfig(layers=8).receptive_field == 61
    for layers in range(1, 11):  # the closed form equals the blocks' own dilations, partial cycles included
        assert receptive_field(3, (1, 2, 4, 8), layers) == 1 + 2 * sum(block_dilations((1, 2, 4, 8), layers))
    assert CNNConfig(layers=5).receptive_field == 33  # 1 + 2 * (1 + 2 + 4 + 8 + 1)
    assert CNNConfig(kernel=1).receptive_field == 1  # a bigram model
    assert CNNConfig(receptive_field=31).receptive_field == 31  # run.json read back
    with pytest.raises(ValueError, match="derived"):
        CNNConfig(receptive_field=30)
    for bad in ({"kernel": 0}, {"dilations": (1, 0)}, {"norm": "batch"}, {"dilations": (1 << 20,)}):
        with pytest.raises(ValueError):
            CNNConfig(**bad)


# -- causality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,field", SHAPES)
def test_causal_and_history_is_exactly_the_receptive_field(shape, field):
    net = net_for(*shape)
    rng = np.random.default_rng(1)
    T = 3 * field + 4
    ids = list(rng.integers(3, 20, size=T))
    base = logprobs(net, ids)
    for t in range(T - 1):
        changed = list(ids)
        changed[t + 1:] = [3 + (i - 3 + 1) % 17 for i in ids[t + 1:]]  # every later token differs
        np.testing.assert_array_equal(logprobs(net, changed)[:t + 1], base[:t + 1])  # nothing at <= t moves
    for t in range(field, T):
        outside, inside = list(ids), list(ids)
        outside[t - field] = 3 + (ids[t - field] - 3 + 1) % 17  # just beyond the receptive field of t
        inside[t - field + 1] = 3 + (ids[t - field + 1] - 3 + 1) % 17  # its oldest token
        np.testing.assert_array_equal(logprobs(net, outside)[t], base[t])
        assert np.abs(logprobs(net, inside)[t] - base[t]).max() > 1e-9, (t, field)


def test_the_gate_is_used():
    """GLU, not a plain convolution: zeroing the gate half of a block's output channels changes the scores."""
    net = net_for(3, (1, 2), 2, "layer")
    ids = list(range(3, 15))
    base = logprobs(net, ids)
    with torch.no_grad():
        conv = net.blocks[0].conv
        conv.weight[8:] = 0
        conv.bias[8:] = 30.0  # sigmoid(30) = 1: the gate open everywhere
    assert np.abs(logprobs(net, ids) - base).max() > 1e-3


# -- scoring through the one path ------------------------------------------------------------------------
def adapter(corpus: Path, context: str, **config) -> tuple[CNNModel, list[np.ndarray]]:
    protocol = Protocol(context=context)
    vocab = Vocab.build(count_tokens(read_text(corpus / "train.txt"), protocol))
    torch.manual_seed(0)
    model = CNNModel(CNNConfig(**{"embed": 8, "dropout": 0.0, **config}), vocab, protocol)
    model.net.eval()
    return model, encode(read_text(corpus / "test.txt"), vocab, protocol).sequences


@pytest.mark.parametrize("config", [{"layers": 2, "kernel": 3, "dilations": (1, 2)},
                                    {"layers": 3, "kernel": 2, "dilations": (1, 2, 4), "norm": "weight"}])
def test_stream_scoring_in_chunks_equals_one_full_history_pass(config, tmp_path, monkeypatch):
    model, seqs = adapter(text_corpus(tmp_path / "c", lines=80), "stream", **config)
    field = model.history
    stream = stream_ids(seqs)
    assert len(stream) > 8 * field  # many chunks below
    monkeypatch.setattr(torchlm, "SCORE_TOKENS", 2 * field)  # chunks of 2R tokens overlapping by R
    chunked = np.concatenate(model.sequence_logprobs(seqs))
    with torch.no_grad():  # the whole stream in one forward pass: every token sees its full history
        lp, _ = torchlm.forward_target_logprobs(model.net, torch.tensor(stream[None, :-1]),
                                                torch.tensor(stream[None, 1:]))
    np.testing.assert_allclose(chunked, lp[0].double().numpy(), rtol=0, atol=1e-5)
    slow = np.concatenate(LanguageModel.sequence_logprobs(model, seqs[:6]))  # next_logprobs, contexts cut to R
    np.testing.assert_allclose(chunked[:len(slow)], slow, rtol=0, atol=1e-5)


def test_sentence_scores_do_not_depend_on_the_batch(tmp_path):
    model, seqs = adapter(text_corpus(tmp_path / "c"), "sentence", layers=2)
    together = model.sequence_logprobs(seqs[:10])
    for i, seq in enumerate(seqs[:10]):
        np.testing.assert_allclose(model.sequence_logprobs([seq])[0], together[i], rtol=0, atol=1e-5)


# -- run folders through the CLI -----------------------------------------------------------------------
TINY = ["--layers", "2", "--embed", "16", "--set", "kernel=2", "--set", "dilations=1,2", "--device", "cpu"]


def train_cli(corpus: Path, out: Path, *extra: str) -> dict:
    r = cli("train", "--model", "cnn", "--corpus", corpus, "-o", out, "-q", *TINY, *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads((out / "run.json").read_text())


def test_train_score_check_compare_through_the_cli(tmp_path):
    corpus = text_corpus(tmp_path / "c")
    rec = train_cli(corpus, tmp_path / "stream", "--epochs", "1", "--context", "stream", "--seq-len", "16")
    assert rec["kind"] == "cnn" and rec["status"] == "complete"
    assert rec["config"]["receptive_field"] == 4 and rec["config"]["dilations"] == [1, 2]  # run.json: history
    scored = json.loads(cli("score", tmp_path / "stream", corpus / "test.txt", "--format", "json").stdout)
    assert scored["perplexity"] == pytest.approx(rec["metrics"]["test"]["perplexity"], rel=1e-9)
    r = cli("check", tmp_path / "stream")
    assert r.exit_code == 0, r.stdout + r.stderr
    sent = train_cli(corpus, tmp_path / "sent", "--epochs", "1", "--context", "sentence", "--set", "norm=weight")
    assert sent["protocol"]["context"] == "sentence" and sent["config"]["norm"] == "weight"
    reloaded = api.score(tmp_path / "sent", corpus / "test.txt").summary()["perplexity"]  # weight-norm names load
    assert reloaded == pytest.approx(sent["metrics"]["test"]["perplexity"], rel=1e-9)
    assert cli("check", tmp_path / "sent").exit_code == 0
    other = cli("train", "--model", "mlp", "--corpus", corpus, "-o", tmp_path / "mlp", "-q", "--epochs", "1",
                "--context", "sentence", "--window", "2", "--embed", "8", "--hidden", "16", "--device", "cpu")
    assert other.exit_code == 0, other.stderr
    r = cli("compare", tmp_path / "sent", tmp_path / "mlp", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert {row["model"] for row in json.loads(r.stdout)} >= {"cnn", "mlp"}
    one_error_line(cli("train", "--model", "cnn", "--corpus", corpus, "-o", tmp_path / "bad", "-q",
                       "--set", "receptive_field=9"), 2, "derived")


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    import lmkit.train as train_mod

    corpus = text_corpus(tmp_path / "c")
    args = ("--context", "stream", "--epochs", "3", "--batch-size", "4", "--seq-len", "10", "--eval-every", "5")
    full = train_cli(corpus, tmp_path / "full", *args)
    calls = {"n": 0}
    real = train_mod.score_encoded

    def interrupt_on_second_eval(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "score_encoded", interrupt_on_second_eval)
    r = cli("train", "--model", "cnn", "--corpus", corpus, "-o", tmp_path / "cut", "-q", *TINY, *args)
    assert r.exit_code == 130, r.stderr
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train_mod, "score_encoded", real)
    r = cli("train", "--resume", tmp_path / "cut", "-q")
    assert r.exit_code == 0, r.stderr
    resumed = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert resumed["status"] == "complete" and resumed["config"]["receptive_field"] == 4
    assert resumed["metrics"]["test"]["nll_nats"] == full["metrics"]["test"]["nll_nats"]


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_char_level(context, tmp_path):
    corpus = text_corpus(tmp_path / "c", lines=40)
    run = api.train(api.TrainRequest(model="cnn", corpus=corpus, output=tmp_path / "run", level="char",
                                     context=context, options={"layers": 3, "embed": 16}, sets=["kernel=3"],
                                     train_options={"epochs": 1.0, "batch_size": 8, "warmup_steps": 1,
                                                    "device": "cpu"}, progress=False))
    rec = json.loads((run / "run.json").read_text())
    assert rec["protocol"]["level"] == "char" and rec["config"]["receptive_field"] == 1 + 2 * (1 + 2 + 4)
    assert 1 < rec["metrics"]["test"]["perplexity"] < 40  # characters: far below the vocabulary's size
    assert api.score(run, corpus / "test.txt").summary()["perplexity"] == pytest.approx(
        rec["metrics"]["test"]["perplexity"], rel=1e-9)
